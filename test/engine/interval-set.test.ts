import { describe, expect, it } from "vitest";
import { IntervalSet } from "../../agent/engine/interval-set.ts";
import { prng } from "../conformance/block-device-suite.ts";

/** The obvious model: one flag per unit. */
function rangesOf(bits: Uint8Array): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let i = 0;
  while (i < bits.length) {
    if (!bits[i]) {
      i++;
      continue;
    }
    const s = i;
    while (i < bits.length && bits[i]) i++;
    out.push([s, i]);
  }
  return out;
}

describe("IntervalSet", () => {
  it("merges touching and overlapping ranges and cuts on remove", () => {
    const set = new IntervalSet();
    set.add(10, 20);
    set.add(30, 40);
    set.add(20, 30);
    expect(set.toArray()).toEqual([[10, 40]]);
    set.remove(15, 25);
    expect(set.toArray()).toEqual([
      [10, 15],
      [25, 40],
    ]);
    set.add(0, 5);
    set.add(50, 60);
    set.remove(0, 100);
    expect(set.toArray()).toEqual([]);
    expect(set.covered).toBe(0);
    expect(set.count).toBe(0);
  });

  it("answers covers, overlaps and hull", () => {
    const set = new IntervalSet();
    set.add(100, 200);
    set.add(300, 400);
    expect(set.covers(120, 180)).toBe(true);
    expect(set.covers(150, 350)).toBe(false);
    expect(set.overlaps(200, 300)).toBe(false);
    expect(set.overlaps(199, 300)).toBe(true);
    expect(set.hull(0, 1000)).toEqual([100, 400]);
    expect(set.hull(150, 350)).toEqual([150, 350]);
    expect(set.hull(200, 300)).toBeUndefined();
    expect(set.hull(350, 1000)).toEqual([350, 400]);
  });

  it("matches a per-unit model over thousands of random edits spanning many leaves", () => {
    const space = 400_000;
    const bits = new Uint8Array(space);
    const set = new IntervalSet();
    const rand = prng(7);
    let maxCount = 0;
    for (let step = 0; step < 20_000; step++) {
      // Mostly small edits (many ranges, many leaves), now and then a wide one.
      const wide = rand() < 0.002;
      const length = 1 + Math.floor(rand() * (wide ? 50_000 : 20));
      const start = Math.floor(rand() * (space - length));
      const adding = rand() < (wide ? 0.3 : 0.6);
      if (adding) set.add(start, start + length);
      else set.remove(start, start + length);
      bits.fill(adding ? 1 : 0, start, start + length);
      maxCount = Math.max(maxCount, set.count);
      if (step % 1000 === 0 || step === 19_999) {
        const model = rangesOf(bits);
        expect(set.toArray()).toEqual(model);
        expect(set.count).toBe(model.length);
        expect(set.covered).toBe(bits.reduce((a, b) => a + b, 0));
      }
      if (step % 50 === 0) {
        const qs = Math.floor(rand() * space);
        const qe = Math.min(space, qs + 1 + Math.floor(rand() * 5000));
        const slice = bits.subarray(qs, qe);
        expect(set.covers(qs, qe)).toBe(slice.every((b) => b === 1));
        expect(set.overlaps(qs, qe)).toBe(slice.some((b) => b === 1));
        const first = slice.indexOf(1);
        const last = slice.lastIndexOf(1);
        expect(set.hull(qs, qe)).toEqual(first < 0 ? undefined : [qs + first, qs + last + 1]);
        const pieces: Array<[number, number]> = [];
        set.forEach(qs, qe, (s, e) => {
          pieces.push([s, e]);
          return true;
        });
        expect(pieces).toEqual(rangesOf(slice).map(([s, e]) => [s + qs, e + qs]));
      }
    }
    // The leaves were actually exercised: far more ranges than one leaf holds.
    expect(maxCount).toBeGreaterThan(2000);
  });

  it("keeps appends and ordered loads cheap and exact", () => {
    const set = new IntervalSet();
    for (let i = 0; i < 10_000; i++) set.add(i * 10, i * 10 + 5);
    expect(set.count).toBe(10_000);
    expect(set.covered).toBe(50_000);
    for (let i = 0; i < 10_000; i++) set.add(i * 10 + 5, i * 10 + 10);
    expect(set.toArray()).toEqual([[0, 100_000]]);
  });
});
