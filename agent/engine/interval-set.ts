/**
 * A set of disjoint half-open integer ranges [start, end), kept canonical
 * (sorted, never touching), with cheap insert and remove at any position.
 *
 * The ranges live in leaves of at most LEAF_MAX sorted entries (a two-level
 * sorted list). One flat sorted array would make every insert in the middle
 * a memmove of the whole map: with tens of thousands of ranges left by
 * random 4 KiB writes that costs more than serving the request. Here an edit
 * touches one leaf in the common case; an edit spanning several leaves
 * flattens just those, which costs no more than the ranges it removes.
 *
 * Not concurrent: callers run each edit to completion (JS is single-threaded
 * and nothing here awaits).
 */

const LEAF_MAX = 512;
const LEAF_SPLIT = LEAF_MAX / 2;
const LEAF_MIN = LEAF_MAX / 8;

interface Leaf {
  starts: number[];
  ends: number[];
}

/** Position of a range: leaf index and index inside the leaf. */
interface Cursor {
  leaf: number;
  at: number;
}

export class IntervalSet {
  #leaves: Leaf[] = [];
  #count = 0;
  #covered = 0;

  /** Number of disjoint ranges. */
  get count(): number {
    return this.#count;
  }

  /** Total length covered by the set. */
  get covered(): number {
    return this.#covered;
  }

  /** Add [start, end); touching or overlapping ranges merge. */
  add(start: number, end: number): void {
    if (start >= end) return;
    // Ranges touching [start, end] merge with it: end >= start and start <= end.
    this.#edit(start, end, this.#firstEndAbove(start - 1), this.#firstStartAbove(end), true);
  }

  /** Remove [start, end); ranges overlapping it are cut. */
  remove(start: number, end: number): void {
    if (start >= end || this.#count === 0) return;
    // Only ranges that overlap matter: end > start and start < end.
    this.#edit(start, end, this.#firstEndAbove(start), this.#firstStartAbove(end - 1), false);
  }

  /** Remove everything. */
  clear(): void {
    this.#leaves = [];
    this.#count = 0;
    this.#covered = 0;
  }

  /** True when all of [start, end) is in the set. */
  covers(start: number, end: number): boolean {
    if (start >= end) return true;
    const c = this.#firstEndAbove(start);
    const leaf = this.#leaves[c.leaf];
    if (!leaf) return false;
    return leaf.starts[c.at]! <= start && leaf.ends[c.at]! >= end;
  }

  /** True when some of [start, end) is in the set. */
  overlaps(start: number, end: number): boolean {
    if (start >= end) return false;
    const c = this.#firstEndAbove(start);
    const leaf = this.#leaves[c.leaf];
    return leaf !== undefined && leaf.starts[c.at]! < end;
  }

  /**
   * The smallest range holding every covered part of [start, end), clipped
   * to it, or undefined when none of it is covered.
   */
  hull(start: number, end: number): [number, number] | undefined {
    if (start >= end) return undefined;
    const first = this.#firstEndAbove(start);
    const firstLeaf = this.#leaves[first.leaf];
    if (!firstLeaf || firstLeaf.starts[first.at]! >= end) return undefined;
    const after = this.#firstStartAbove(end - 1);
    const last = this.#before(after);
    const lastEnd = this.#leaves[last.leaf]!.ends[last.at]!;
    return [Math.max(start, firstLeaf.starts[first.at]!), Math.min(end, lastEnd)];
  }

  /**
   * Call `fn(start, end)` for each covered part of [from, to), in order,
   * clipped to it; stop early when `fn` returns false.
   */
  forEach(from: number, to: number, fn: (start: number, end: number) => boolean | undefined): void {
    if (from >= to) return;
    const c = this.#firstEndAbove(from);
    for (let li = c.leaf, at = c.at; li < this.#leaves.length; li++, at = 0) {
      const leaf = this.#leaves[li]!;
      for (; at < leaf.starts.length; at++) {
        const s = leaf.starts[at]!;
        if (s >= to) return;
        if (fn(Math.max(s, from), Math.min(leaf.ends[at]!, to)) === false) return;
      }
    }
  }

  /** Every range, in order (for tests and debugging). */
  toArray(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (const leaf of this.#leaves) {
      for (let i = 0; i < leaf.starts.length; i++) out.push([leaf.starts[i]!, leaf.ends[i]!]);
    }
    return out;
  }

  /** First range with end > p, or the end cursor. */
  #firstEndAbove(p: number): Cursor {
    const leaves = this.#leaves;
    let lo = 0;
    let hi = leaves.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const ends = leaves[mid]!.ends;
      if (ends[ends.length - 1]! > p) hi = mid;
      else lo = mid + 1;
    }
    if (lo === leaves.length) return { leaf: lo, at: 0 };
    return { leaf: lo, at: upperBound(leaves[lo]!.ends, p) };
  }

  /** First range with start > q, or the end cursor. */
  #firstStartAbove(q: number): Cursor {
    const leaves = this.#leaves;
    let lo = 0;
    let hi = leaves.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const starts = leaves[mid]!.starts;
      if (starts[starts.length - 1]! > q) hi = mid;
      else lo = mid + 1;
    }
    if (lo === leaves.length) return { leaf: lo, at: 0 };
    return { leaf: lo, at: upperBound(leaves[lo]!.starts, q) };
  }

  /** The cursor just before `c` (callers guarantee there is one). */
  #before(c: Cursor): Cursor {
    if (c.at > 0) return { leaf: c.leaf, at: c.at - 1 };
    const leaf = c.leaf - 1;
    return { leaf, at: this.#leaves[leaf]!.starts.length - 1 };
  }

  /**
   * Replace the ranges from cursor `a` (inclusive) to `b` (exclusive) by the
   * result of adding or removing [start, end) over them.
   */
  #edit(start: number, end: number, a: Cursor, b: Cursor, adding: boolean): void {
    const leaves = this.#leaves;
    if (leaves.length === 0) {
      if (adding) this.#insertLeaf(0, { starts: [start], ends: [end] }, end - start);
      return;
    }
    // Normalise both cursors to (leaf, index) inside real leaves.
    if (a.leaf === leaves.length) {
      // Every range ends before `start`: only an add at the very end.
      if (adding) {
        const last = leaves.length - 1;
        const n = leaves[last]!.starts.length;
        this.#spliceLeaf(last, n, n, start, end, adding);
      }
      return;
    }
    let lastLeaf: number;
    let stop: number;
    if (b.at === 0) {
      lastLeaf = b.leaf - 1;
      stop = lastLeaf >= 0 ? leaves[lastLeaf]!.starts.length : 0;
    } else {
      lastLeaf = b.leaf;
      stop = b.at;
    }
    if (lastLeaf < a.leaf) {
      // No range affected; the new one goes right before cursor `a`.
      if (adding) this.#spliceLeaf(a.leaf, a.at, a.at, start, end, adding);
      return;
    }
    if (lastLeaf === a.leaf) {
      this.#spliceLeaf(a.leaf, a.at, stop, start, end, adding);
      return;
    }
    // Several leaves affected: flatten them into the first, then edit it.
    const into = leaves[a.leaf]!;
    let offset = into.starts.length;
    for (let li = a.leaf + 1; li <= lastLeaf; li++) {
      const leaf = leaves[li]!;
      if (li === lastLeaf) stop += offset;
      for (let i = 0; i < leaf.starts.length; i++) {
        into.starts.push(leaf.starts[i]!);
        into.ends.push(leaf.ends[i]!);
      }
      offset += leaf.starts.length;
    }
    leaves.splice(a.leaf + 1, lastLeaf - a.leaf);
    this.#spliceLeaf(a.leaf, a.at, stop, start, end, adding);
  }

  /** Edit ranges [i, j) of one leaf, then keep leaf sizes in bounds. */
  #spliceLeaf(li: number, i: number, j: number, start: number, end: number, adding: boolean): void {
    const leaf = this.#leaves[li]!;
    const { starts, ends } = leaf;
    let removed = 0;
    for (let k = i; k < j; k++) removed += ends[k]! - starts[k]!;
    if (adding) {
      const s = i < j ? Math.min(start, starts[i]!) : start;
      const e = i < j ? Math.max(end, ends[j - 1]!) : end;
      starts.splice(i, j - i, s);
      ends.splice(i, j - i, e);
      this.#count += 1 - (j - i);
      this.#covered += e - s - removed;
    } else {
      if (i >= j) return;
      const ns: number[] = [];
      const ne: number[] = [];
      if (starts[i]! < start) {
        ns.push(starts[i]!);
        ne.push(start);
      }
      if (ends[j - 1]! > end) {
        ns.push(end);
        ne.push(ends[j - 1]!);
      }
      let kept = 0;
      for (let k = 0; k < ns.length; k++) kept += ne[k]! - ns[k]!;
      starts.splice(i, j - i, ...ns);
      ends.splice(i, j - i, ...ne);
      this.#count += ns.length - (j - i);
      this.#covered += kept - removed;
    }
    this.#rebalance(li);
  }

  #insertLeaf(li: number, leaf: Leaf, covered: number): void {
    this.#leaves.splice(li, 0, leaf);
    this.#count += leaf.starts.length;
    this.#covered += covered;
  }

  /** Split an oversized leaf, drop an empty one, fold a tiny one into a neighbour. */
  #rebalance(li: number): void {
    const leaves = this.#leaves;
    const leaf = leaves[li]!;
    const n = leaf.starts.length;
    if (n === 0) {
      leaves.splice(li, 1);
      return;
    }
    if (n > LEAF_MAX) {
      const parts: Leaf[] = [];
      for (let k = 0; k < n; k += LEAF_SPLIT) {
        parts.push({
          starts: leaf.starts.slice(k, k + LEAF_SPLIT),
          ends: leaf.ends.slice(k, k + LEAF_SPLIT),
        });
      }
      leaves.splice(li, 1, ...parts);
      return;
    }
    if (n < LEAF_MIN) {
      const next = leaves[li + 1];
      if (next && next.starts.length + n <= LEAF_MAX) {
        leaf.starts.push(...next.starts);
        leaf.ends.push(...next.ends);
        leaves.splice(li + 1, 1);
        return;
      }
      const prev = leaves[li - 1];
      if (prev && prev.starts.length + n <= LEAF_MAX) {
        prev.starts.push(...leaf.starts);
        prev.ends.push(...leaf.ends);
        leaves.splice(li, 1);
      }
    }
  }
}

/** First index with a[index] > x in a sorted array (a.length when none). */
function upperBound(a: number[], x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! > x) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
