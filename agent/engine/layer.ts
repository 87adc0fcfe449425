/**
 * What a layer shows of the device it wraps: size, mode, block sizes and
 * multi-conn safety, taken once when the stack is built. Every engine layer
 * extends it; only its request methods are its own.
 */
import type { BlockDevice, BlockSizes } from "../nbd/device.ts";

/** The fixed properties of a BlockDevice, copied from the one below. */
export abstract class Layer {
  readonly size: number;
  readonly readOnly: boolean;
  readonly blockSizes: BlockSizes;
  readonly canMultiConn: boolean;

  /** `blockSizes` replaces next's, for a layer that accepts other sizes. */
  constructor(next: BlockDevice, blockSizes: BlockSizes = next.blockSizes) {
    this.size = next.size;
    this.readOnly = next.readOnly;
    this.blockSizes = blockSizes;
    this.canMultiConn = next.canMultiConn;
  }
}
