/**
 * Meter layer: counts requests and bytes by kind as they pass, for
 * /metrics. The volume puts one at the top (what clients asked for) and one
 * at the bottom (what reached the backend). The top one also times every
 * request and counts those in flight (`ClientLatency`).
 *
 * Concurrency: counts at call time. Untimed, it adds nothing to the
 * request's promise; timed, one `.then()` with handlers bound in advance
 * (latency.ts), so a request allocates one promise and nothing else.
 */
import type { BlockDevice, Extent, WriteOptions, ZeroOptions } from "../nbd/device.ts";
import type { ClientLatency } from "./latency.ts";

/** Requests and bytes by kind. */
export interface IoCounts {
  reads: number;
  writes: number;
  flushes: number;
  trims: number;
  zeroes: number;
  blockStatus: number;
  caches: number;
  bytesRead: number;
  bytesWritten: number;
  bytesTrimmed: number;
  bytesZeroed: number;
}

/** Fresh all-zero counters. */
export function ioCounts(): IoCounts {
  return {
    reads: 0,
    writes: 0,
    flushes: 0,
    trims: 0,
    zeroes: 0,
    blockStatus: 0,
    caches: 0,
    bytesRead: 0,
    bytesWritten: 0,
    bytesTrimmed: 0,
    bytesZeroed: 0,
  };
}

/** Count what passes into `counts`; with `latency`, time it too. */
export function meter(next: BlockDevice, counts: IoCounts, latency?: ClientLatency): BlockDevice {
  if (latency) return timedMeter(next, counts, latency);
  return {
    size: next.size,
    readOnly: next.readOnly,
    blockSizes: next.blockSizes,
    canMultiConn: next.canMultiConn,
    read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
      counts.reads++;
      counts.bytesRead += length;
      return next.read(offset, length, into);
    },
    write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
      counts.writes++;
      counts.bytesWritten += data.length;
      return next.write(offset, data, opts);
    },
    flush(): Promise<void> {
      counts.flushes++;
      return next.flush();
    },
    trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
      counts.trims++;
      counts.bytesTrimmed += length;
      return next.trim(offset, length, opts);
    },
    writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
      counts.zeroes++;
      counts.bytesZeroed += length;
      return next.writeZeroes(offset, length, opts);
    },
    blockStatus(offset: number, length: number): Promise<Extent[]> {
      counts.blockStatus++;
      return next.blockStatus(offset, length);
    },
    cache(offset: number, length: number): Promise<void> {
      counts.caches++;
      return next.cache(offset, length);
    },
    close(): Promise<void> {
      return next.close();
    },
  };
}

/*
 * A synchronous throw from below completes the request as well (the
 * `catch` calls the failure handler, which rethrows), so in-flight never
 * leaks. blockStatus and cache are in flight but not timed.
 */
function timedMeter(next: BlockDevice, counts: IoCounts, latency: ClientLatency): BlockDevice {
  return {
    size: next.size,
    readOnly: next.readOnly,
    blockSizes: next.blockSizes,
    canMultiConn: next.canMultiConn,
    read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
      counts.reads++;
      counts.bytesRead += length;
      const t = latency.begin(latency.read);
      try {
        return next.read(offset, length, into).then(t.done, t.failed);
      } catch (err) {
        return t.failed(err);
      }
    },
    write(offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void> {
      counts.writes++;
      counts.bytesWritten += data.length;
      const t = latency.begin(latency.write);
      try {
        return next.write(offset, data, opts).then(t.done, t.failed);
      } catch (err) {
        return t.failed(err);
      }
    },
    flush(): Promise<void> {
      counts.flushes++;
      const t = latency.begin(latency.flush);
      try {
        return next.flush().then(t.done, t.failed);
      } catch (err) {
        return t.failed(err);
      }
    },
    trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
      counts.trims++;
      counts.bytesTrimmed += length;
      const t = latency.begin(latency.trim);
      try {
        return next.trim(offset, length, opts).then(t.done, t.failed);
      } catch (err) {
        return t.failed(err);
      }
    },
    writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
      counts.zeroes++;
      counts.bytesZeroed += length;
      const t = latency.begin(latency.zero);
      try {
        return next.writeZeroes(offset, length, opts).then(t.done, t.failed);
      } catch (err) {
        return t.failed(err);
      }
    },
    blockStatus(offset: number, length: number): Promise<Extent[]> {
      counts.blockStatus++;
      const t = latency.begin(null);
      try {
        return next.blockStatus(offset, length).then(t.done, t.failed);
      } catch (err) {
        return t.failed(err);
      }
    },
    cache(offset: number, length: number): Promise<void> {
      counts.caches++;
      const t = latency.begin(null);
      try {
        return next.cache(offset, length).then(t.done, t.failed);
      } catch (err) {
        return t.failed(err);
      }
    },
    close(): Promise<void> {
      return next.close();
    },
  };
}
