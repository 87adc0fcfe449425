/**
 * The BlockDevice contract as one vitest suite, run against the memory
 * backend, every engine layer stack and the page blob backend on Azurite.
 *
 * Backend-agnostic: it only uses the BlockDevice interface, keeps within the
 * first few MiB (plus the last sectors for bounds), and creates a fresh device
 * per test through `makeDevice`. Requests respect `alignment` (512 for raw
 * backends, 1 for stacks with the align layer) and `maxIo`.
 */
import { describe, expect, it } from "vitest";
import { type BlockDevice, BlockError, type Extent } from "../../agent/nbd/device.ts";

export interface DeviceUnderTest {
  device: BlockDevice;
  cleanup?: () => Promise<void>;
}

export interface BlockDeviceSuiteOptions {
  /** Granularity of every offset and length the suite uses (default 512). */
  alignment?: number;
  /** Largest single request (default 4 MiB). */
  maxIo?: number;
  /**
   * Whether blockStatus reports holes precisely enough that a 64 KiB-aligned
   * range reads as a hole after writeZeroes or trim, and as data after a
   * write (page-granular backends: yes; default true).
   */
  reportsHoles?: boolean;
  /** Makes a read-only device; the read-only test is skipped without it. */
  makeReadOnly?: () => Promise<DeviceUnderTest>;
}

const KiB = 1024;
const MiB = 1024 * KiB;
/** The suite works inside this much of the device. */
const AREA = 4 * MiB;

/**
 * Register the contract tests for devices from `makeDevice`. Devices must be
 * at least 8 MiB, and at least twice `maxIo`.
 */
export function blockDeviceSuite(
  name: string,
  makeDevice: () => Promise<DeviceUnderTest>,
  opts: BlockDeviceSuiteOptions = {},
): void {
  const A = opts.alignment ?? 512;
  const maxIo = opts.maxIo ?? 4 * MiB;
  const reportsHoles = opts.reportsHoles ?? true;

  /** Run `fn` on a fresh device, then close it (if still open) and clean up. */
  async function withDevice(fn: (dev: BlockDevice) => Promise<void>): Promise<void> {
    const { device, cleanup } = await makeDevice();
    try {
      await fn(device);
    } finally {
      await device.close().catch(() => {});
      await cleanup?.();
    }
  }

  describe(`BlockDevice contract: ${name}`, () => {
    it("has a consistent geometry", async () => {
      await withDevice(async (dev) => {
        const { minimum, preferred, maximum } = dev.blockSizes;
        expect(dev.size).toBeGreaterThanOrEqual(Math.max(8 * MiB, 2 * maxIo));
        expect(dev.size % minimum).toBe(0);
        expect(minimum).toBeGreaterThan(0);
        expect(minimum).toBeLessThanOrEqual(preferred);
        expect(preferred).toBeLessThanOrEqual(maximum);
        expect(maximum).toBeGreaterThanOrEqual(Math.min(maxIo, 4 * MiB));
        expect(dev.readOnly).toBe(false);
      });
    });

    it("reads never-written space as zeros", async () => {
      await withDevice(async (dev) => {
        for (const [offset, length] of [
          [0, 64 * KiB],
          [AREA / 2 + A, 3 * A],
          [dev.size - A, A],
          [dev.size - 1 * MiB, 1 * MiB],
        ] as const) {
          expectZeros(await dev.read(offset, length), `${offset}+${length}`);
        }
      });
    });

    it("round-trips writes at many offsets and sizes without touching neighbours", async () => {
      await withDevice(async (dev) => {
        const model = Buffer.alloc(AREA);
        const cases = writeCases(A);
        let seed = 1;
        for (const [offset, length] of cases) {
          const data = pattern(seed++, length);
          await dev.write(offset, data);
          data.copy(model, offset);
          expectSame(await dev.read(offset, length), data, `read back ${offset}+${length}`);
        }
        expectSame(await dev.read(0, AREA), model, "whole area after all writes");
        // Reads that cut across several earlier writes, at the suite's alignment.
        for (const [offset, length] of [
          [A, 3 * A],
          [4 * KiB - A, 2 * A],
          [60 * KiB + A, 8 * KiB + A],
        ] as const) {
          expectSame(
            await dev.read(offset, length),
            model.subarray(offset, offset + length),
            `${offset}+${length}`,
          );
        }
      });
    });

    it("round-trips a write of the largest request size", async () => {
      await withDevice(async (dev) => {
        const length = Math.min(maxIo, dev.size / 2);
        const offset = dev.size - length - 8 * A;
        const data = pattern(7, length);
        await dev.write(offset, data);
        expectSame(await dev.read(offset, length), data, "largest write");
        expectZeros(await dev.read(offset - A, A), "sector before");
        expectZeros(await dev.read(offset + length, A), "sector after");
      });
    });

    it("writeZeroes reads back as zeros, with or without flags, and leaves neighbours alone", async () => {
      await withDevice(async (dev) => {
        const model = pattern(3, 512 * KiB);
        await dev.write(0, model);
        const ranges: Array<[number, number, object | undefined]> = [
          [A, 2 * A, undefined],
          [8 * KiB, 64 * KiB, undefined],
          [100 * KiB + A, 16 * KiB + A, { fua: true }],
          [200 * KiB, 64 * KiB, { noHole: true }],
          [300 * KiB - A, 128 * KiB + 2 * A, undefined],
        ];
        for (const [offset, length, flags] of ranges) {
          await dev.writeZeroes(offset, length, flags);
          model.fill(0, offset, offset + length);
        }
        try {
          await dev.writeZeroes(450 * KiB, 16 * KiB, { fastZero: true });
          model.fill(0, 450 * KiB, 466 * KiB);
        } catch (err) {
          // FAST_ZERO may be refused, but only with ENOTSUP and with nothing changed.
          expect(err).toBeInstanceOf(BlockError);
          expect((err as BlockError).errno).toBe("ENOTSUP");
        }
        expectSame(await dev.read(0, model.length), model, "after writeZeroes");
      });
    });

    it("trim leaves zeros or the old data, and never touches neighbours", async () => {
      await withDevice(async (dev) => {
        const old = pattern(4, 256 * KiB);
        await dev.write(0, old);
        const from = 16 * KiB + A;
        const to = 200 * KiB - A;
        await dev.trim(from, to - from);
        const back = Buffer.from(await dev.read(0, old.length));
        expectSame(back.subarray(0, from), old.subarray(0, from), "before the trim");
        expectSame(back.subarray(to), old.subarray(to), "after the trim");
        for (let i = from; i < to; i++) {
          if (back[i] !== 0 && back[i] !== old[i]) {
            expect.fail(`byte ${i} after trim is ${back[i]}, neither 0 nor the old ${old[i]}`);
          }
        }
      });
    });

    it("blockStatus covers the range in order without gaps, and zero means zeros", async () => {
      await withDevice(async (dev) => {
        await dev.write(64 * KiB, pattern(5, 128 * KiB));
        await dev.write(512 * KiB + A, pattern(6, 4 * KiB));
        await dev.writeZeroes(96 * KiB, 32 * KiB);
        for (const [offset, length] of [
          [0, AREA],
          [64 * KiB, 128 * KiB],
          [A, 3 * A],
          [500 * KiB + A, 64 * KiB - A],
          [dev.size - 64 * KiB, 64 * KiB],
        ] as const) {
          const extents = await dev.blockStatus(offset, length);
          expectCovering(extents, offset, length);
          for (const e of extents) {
            if (e.zero)
              expectZeros(
                await dev.read(e.offset, e.length),
                `zero extent ${e.offset}+${e.length}`,
              );
          }
        }
      });
    });

    it.runIf(reportsHoles)(
      "blockStatus shows data after a write and holes after writeZeroes and trim",
      async () => {
        await withDevice(async (dev) => {
          const base = 1 * MiB;
          expect(await allHole(dev, base, 256 * KiB)).toBe(true);
          await dev.write(base, pattern(8, 256 * KiB));
          const written = await dev.blockStatus(base, 256 * KiB);
          expectCovering(written, base, 256 * KiB);
          expect(written.every((e) => !e.hole && !e.zero)).toBe(true);
          await dev.writeZeroes(base, 64 * KiB);
          expect(await allHole(dev, base, 64 * KiB)).toBe(true);
          await dev.trim(base + 128 * KiB, 64 * KiB);
          expect(await allHole(dev, base + 128 * KiB, 64 * KiB)).toBe(true);
          const middle = await dev.blockStatus(base + 64 * KiB, 64 * KiB);
          expect(middle.every((e) => !e.hole)).toBe(true);
        });
      },
    );

    it("lands every one of many concurrent writes to disjoint ranges", async () => {
      await withDevice(async (dev) => {
        const writes: Array<[number, Buffer]> = [];
        // A sequential run (mergeable), scattered blocks, and odd sizes.
        for (let i = 0; i < 48; i++)
          writes.push([1 * MiB + i * 4 * KiB, pattern(100 + i, 4 * KiB)]);
        for (let i = 0; i < 24; i++) {
          writes.push([2 * MiB + ((i * 37) % 24) * 64 * KiB + 8 * KiB, pattern(200 + i, 8 * KiB)]);
        }
        for (let i = 0; i < 8; i++)
          writes.push([AREA - 256 * KiB + i * 16 * KiB + A, pattern(300 + i, 5 * A)]);
        await Promise.all(writes.map(([offset, data]) => dev.write(offset, data)));
        const back = await Promise.all(
          writes.map(([offset, data]) => dev.read(offset, data.length)),
        );
        for (const [i, [offset, data]] of writes.entries())
          expectSame(back[i]!, data, `write at ${offset}`);
      });
    });

    it.runIf(A < 512)("lands concurrent unaligned writes that share sectors", async () => {
      await withDevice(async (dev) => {
        const base = 3 * MiB;
        const model = Buffer.alloc(4 * 512);
        const writes: Array<[number, Buffer]> = [];
        // Eight 64-byte pieces of one sector, and pieces straddling sector boundaries.
        for (let i = 0; i < 8; i++) writes.push([i * 64, pattern(400 + i, 64)]);
        writes.push(
          [512 - 10, pattern(410, 20)],
          [1024 - 3, pattern(411, 515)],
          [1536 + 1, pattern(412, 100)],
        );
        for (const [at, data] of writes) data.copy(model, at);
        await Promise.all(writes.map(([at, data]) => dev.write(base + at, data)));
        expectSame(await dev.read(base, model.length), model, "shared sectors");
      });
    });

    it("stays consistent under batches of concurrent random writes and writeZeroes", async () => {
      await withDevice(async (dev) => {
        const span = 2 * MiB;
        const model = Buffer.alloc(span);
        const rand = prng(42);
        for (let round = 0; round < 25; round++) {
          const batch: Array<[number, number, Buffer | null]> = [];
          for (let k = 0; k < 8; k++) {
            const length = (1 + Math.floor(rand() * 64)) * Math.max(A, rand() < 0.5 ? A : 512);
            const offset = Math.floor((rand() * (span - length)) / A) * A;
            if (batch.some(([o, l]) => o < offset + length && offset < o + l)) continue;
            batch.push([offset, length, rand() < 0.25 ? null : pattern(round * 100 + k, length)]);
          }
          await Promise.all(
            batch.map(([offset, length, data]) =>
              data ? dev.write(offset, data) : dev.writeZeroes(offset, length),
            ),
          );
          for (const [offset, length, data] of batch) {
            if (data) data.copy(model, offset);
            else model.fill(0, offset, offset + length);
          }
        }
        expectSame(await dev.read(0, span), model, "after random batches");
      });
    });

    it("flush resolves after plain and FUA writes, and the data stays", async () => {
      await withDevice(async (dev) => {
        const a = pattern(9, 64 * KiB);
        const b = pattern(10, 64 * KiB);
        const pending = [dev.write(0, a), dev.write(64 * KiB, b, { fua: true })];
        await dev.flush();
        await Promise.all(pending);
        await dev.flush();
        expectSame(await dev.read(0, 64 * KiB), a, "plain write");
        expectSame(await dev.read(64 * KiB, 64 * KiB), b, "FUA write");
      });
    });

    it("cache resolves and changes nothing", async () => {
      await withDevice(async (dev) => {
        const data = pattern(11, 8 * KiB);
        await dev.write(0, data);
        await dev.cache(0, 1 * MiB);
        expectSame(await dev.read(0, data.length), data, "after cache");
      });
    });

    it("rejects requests that reach past the end", async () => {
      await withDevice(async (dev) => {
        const end = dev.size;
        await expectBounds(dev.read(end - A, 2 * A));
        await expectBounds(dev.read(end, A));
        await expectBounds(dev.write(end - A, Buffer.alloc(2 * A, 1)));
        await expectBounds(dev.writeZeroes(end, A));
        expectZeros(await dev.read(end - A, A), "last sector");
        await dev.write(end - A, Buffer.alloc(A, 7));
        expectSame(await dev.read(end - A, A), Buffer.alloc(A, 7), "last sector written");
      });
    });

    it.runIf(opts.makeReadOnly !== undefined)(
      "a read-only device refuses mutations with EPERM",
      async () => {
        const { device, cleanup } = await opts.makeReadOnly!();
        try {
          expect(device.readOnly).toBe(true);
          await expectErrno(device.write(0, Buffer.alloc(4 * KiB, 1)), "EPERM");
          await expectErrno(device.writeZeroes(0, 4 * KiB), "EPERM");
          await expectErrno(device.trim(0, 4 * KiB), "EPERM");
          expect((await device.read(0, 4 * KiB)).length).toBe(4 * KiB);
          await device.flush();
        } finally {
          await device.close().catch(() => {});
          await cleanup?.();
        }
      },
    );

    it("after close every call fails with ESHUTDOWN", async () => {
      await withDevice(async (dev) => {
        await dev.write(0, pattern(12, 4 * KiB));
        await dev.close();
        const calls: Array<[string, () => Promise<unknown>]> = [
          ["read", () => dev.read(0, 4 * KiB)],
          ["read of a hole", () => dev.read(2 * MiB, 4 * KiB)],
          ["write", () => dev.write(0, Buffer.alloc(4 * KiB))],
          ["flush", () => dev.flush()],
          ["trim", () => dev.trim(0, 4 * KiB)],
          ["writeZeroes", () => dev.writeZeroes(0, 4 * KiB)],
          ["blockStatus", () => dev.blockStatus(0, 64 * KiB)],
          ["cache", () => dev.cache(0, 4 * KiB)],
        ];
        for (const [what, call] of calls) {
          await expectErrno(call(), "ESHUTDOWN", what);
        }
      });
    });
  });
}

/** (offset, length) pairs inside AREA, at alignment `a`, not overlapping in a way that hides bugs. */
function writeCases(a: number): Array<[number, number]> {
  const cases: Array<[number, number]> = [
    [0, a],
    [a, 2 * a],
    [4 * KiB - a, 2 * a],
    [8 * KiB, 4 * KiB],
    [16 * KiB + a, 4 * KiB + a],
    [32 * KiB, 64 * KiB - a],
    [128 * KiB - a, 64 * KiB + 2 * a],
    [1 * MiB - 3 * a, 1 * MiB + 5 * a],
    [AREA - 64 * KiB, 64 * KiB],
  ];
  if (a < 512) {
    cases.push(
      [3 * MiB + 1, 1],
      [3 * MiB + 7, 505],
      [3 * MiB + 511, 2],
      [3 * MiB + 1000, 4097],
      [3 * MiB + 10_000, 3],
    );
  }
  return cases;
}

/** Deterministic bytes for a seed, never all zero. */
export function pattern(seed: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  const next = prng(seed);
  const words = new Uint32Array(buf.buffer, buf.byteOffset, Math.floor(length / 4));
  for (let i = 0; i < words.length; i++) words[i] = (next() * 0x1_0000_0000) >>> 0;
  for (let i = words.length * 4; i < length; i++) buf[i] = Math.floor(next() * 256);
  if (length > 0 && buf[0] === 0) buf[0] = 1;
  return buf;
}

/** mulberry32: small, fast, seeded. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function expectSame(actual: Uint8Array, expected: Uint8Array, what: string): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  if (!a.equals(expected)) {
    let i = 0;
    while (i < a.length && a[i] === expected[i]) i++;
    expect.fail(`${what}: first difference at byte ${i}: got ${a[i]}, expected ${expected[i]}`);
  }
}

function expectZeros(actual: Uint8Array, what: string): void {
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  if (a.equals(Buffer.alloc(a.length))) return;
  const i = a.findIndex((b) => b !== 0);
  expect.fail(`${what}: byte ${i} is ${a[i]}, expected zeros`);
}

function expectCovering(extents: Extent[], offset: number, length: number): void {
  expect(extents.length).toBeGreaterThan(0);
  expect(extents[0]!.offset).toBe(offset);
  let pos = offset;
  for (const e of extents) {
    expect(e.offset).toBe(pos);
    expect(e.length).toBeGreaterThan(0);
    if (e.hole) expect(e.zero).toBe(true);
    pos += e.length;
  }
  expect(pos).toBeLessThanOrEqual(offset + length);
}

/** True when blockStatus reports all of [offset, offset+length) as hole (asking again where it stops short). */
async function allHole(dev: BlockDevice, offset: number, length: number): Promise<boolean> {
  let pos = offset;
  while (pos < offset + length) {
    const extents = await dev.blockStatus(pos, offset + length - pos);
    expectCovering(extents, pos, offset + length - pos);
    if (!extents.every((e) => e.hole && e.zero)) return false;
    const last = extents[extents.length - 1]!;
    pos = last.offset + last.length;
  }
  return true;
}

async function expectErrno(p: Promise<unknown>, errno: string, what = ""): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `${what} should reject`).toBeInstanceOf(BlockError);
  expect((err as BlockError).errno, what).toBe(errno);
}

async function expectBounds(p: Promise<unknown>): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "out-of-range request should reject").toBeInstanceOf(BlockError);
  expect(["ENOSPC", "EINVAL"]).toContain((err as BlockError).errno);
}
