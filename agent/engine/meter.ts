/**
 * Meter layer: counts requests and bytes by kind as they pass, for
 * /metrics. The volume puts one at the top (what clients asked for) and one
 * at the bottom (what reached the backend). Client latency and queue depth
 * are not measured here but in the failure guard above the top one
 * (failure.ts), which has a completion handler per request already.
 *
 * Concurrency: counts at call time and adds nothing to the request's
 * promise: a meter costs no allocation.
 */
import type { BlockDevice, Extent, WriteOptions, ZeroOptions } from "../nbd/device.ts";

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

/** Count what passes into `counts`. */
export function meter(next: BlockDevice, counts: IoCounts): BlockDevice {
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
