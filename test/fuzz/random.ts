/**
 * The seeded randomness and the sizes of the fuzz and soak suites.
 *
 * Every input a suite makes comes from one `Random` built from one seed,
 * and the suite prints that seed: a run that found something is replayed
 * with `PAGEDISK_FUZZ_SEED=<seed>`. (Concurrent sessions may interleave
 * differently on a replay; what each one sends does not change.)
 *
 * Sizes are small by default, for `npm test`; `npm run soak`
 * (test/soak/run.ts) sets the same variables much larger.
 */

/** mulberry32: tiny and fast, and plenty for picking inputs (not for secrets). */
export class Random {
  readonly seed: number;
  #state: number;

  constructor(seed: number) {
    this.seed = seed >>> 0;
    this.#state = this.seed;
  }

  /** Uniform in [0, 2^32). */
  u32(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.u32() / 2 ** 32;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Integer in [lo, hi], both included. */
  between(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("pick from nothing");
    return items[this.int(items.length)]!;
  }

  /** One of `choices`, each as likely as its weight. */
  weighted<T>(choices: readonly (readonly [T, number])[]): T {
    const total = choices.reduce((sum, [, w]) => sum + w, 0);
    let at = this.next() * total;
    for (const [value, weight] of choices) {
      at -= weight;
      if (at < 0) return value;
    }
    return choices[choices.length - 1]![0];
  }

  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.u32();
      for (let j = 0; j < 4 && i + j < n; j++) out[i + j] = (v >>> (8 * j)) & 0xff;
    }
    return out;
  }

  /** A generator of its own, seeded from this one: a session's inputs then do not depend on how many others drew before it ran. */
  fork(): Random {
    return new Random(this.u32());
  }
}

/** The seed to use: `PAGEDISK_FUZZ_SEED` when set (to replay a run), else a fresh one. */
export function fuzzSeed(env: NodeJS.ProcessEnv = process.env): number {
  const given = env.PAGEDISK_FUZZ_SEED;
  if (given !== undefined && given !== "") {
    const seed = Number(given);
    if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) {
      throw new Error(`PAGEDISK_FUZZ_SEED must be an integer in [0, 2^32), not "${given}"`);
    }
    return seed;
  }
  return Math.floor(Math.random() * 2 ** 32);
}

/** A positive whole number from the environment, or `fallback` when unset. */
export function sizeFromEnv(name: string, fallback: number, env: NodeJS.ProcessEnv = process.env): number {
  const given = env[name];
  if (given === undefined || given === "") return fallback;
  const n = Number(given);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, not "${given}"`);
  return n;
}

/** "nbd fuzz: seed 123, tried 300, failed 0, ..." : the one line each suite prints. */
export function summaryLine(suite: string, seed: number, counts: object): string {
  const parts = Object.entries(counts).map(([name, n]) => `${name} ${String(n)}`);
  return `${suite}: seed ${seed} (replay with PAGEDISK_FUZZ_SEED=${seed}), ${parts.join(", ")}`;
}
