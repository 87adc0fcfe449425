/**
 * The named exports a server offers and how each one is advertised to
 * clients (transmission flags, block sizes, description).
 */
import type { BlockDevice, BlockSizes } from "./device.ts";
import { TX } from "./protocol.ts";

/**
 * Block sizes the NBD edge advertises by default. They describe what the
 * server accepts, not what the device handles natively: the layers below
 * split large requests and align small ones.
 */
export const DEFAULT_BLOCK_SIZES: Readonly<BlockSizes> = {
  minimum: 512,
  preferred: 4096,
  maximum: 32 * 1024 * 1024,
};

/** How one export is presented; everything optional. */
export interface ExportOptions {
  /** Shown by `nbdinfo --list` and sent as NBD_INFO_DESCRIPTION. */
  description?: string;
  /** Serve read-only even if the device is writable. */
  readOnly?: boolean;
  /** Advertised limits; the server's default when absent. */
  blockSizes?: BlockSizes;
}

/** An export as the protocol layer sees it. */
export interface NbdExport {
  readonly name: string;
  readonly device: BlockDevice;
  readonly description: string;
  readonly readOnly: boolean;
  readonly blockSizes: Readonly<BlockSizes>;
}

/** Longest export name the protocol allows (strings are at most 4096 bytes). */
const MAX_NAME_BYTES = 4096;

/**
 * The set of exports, with the rule for the default ("") name: the export
 * named as default, else one actually named "", else the only export.
 */
export class ExportCatalog {
  readonly #exports = new Map<string, NbdExport>();
  readonly #defaultBlockSizes: Readonly<BlockSizes>;
  #defaultName: string | undefined;

  constructor(defaultBlockSizes: BlockSizes = DEFAULT_BLOCK_SIZES, defaultName?: string) {
    checkBlockSizes(defaultBlockSizes);
    this.#defaultBlockSizes = { ...defaultBlockSizes };
    this.#defaultName = defaultName;
  }

  /** Add an export; the name must be new. */
  add(name: string, device: BlockDevice, opts: ExportOptions = {}): NbdExport {
    if (Buffer.byteLength(name, "utf8") > MAX_NAME_BYTES || name.includes("\0")) {
      throw new RangeError(`invalid export name ${JSON.stringify(name)}`);
    }
    if (this.#exports.has(name)) throw new Error(`export ${JSON.stringify(name)} already exists`);
    const blockSizes = opts.blockSizes ?? this.#defaultBlockSizes;
    checkBlockSizes(blockSizes);
    if (device.size % blockSizes.minimum !== 0) {
      throw new RangeError(
        `export ${JSON.stringify(name)}: size ${device.size} is not a multiple of ${blockSizes.minimum}`,
      );
    }
    const exp: NbdExport = {
      name,
      device,
      description: opts.description ?? "",
      readOnly: (opts.readOnly ?? false) || device.readOnly,
      blockSizes: { ...blockSizes },
    };
    this.#exports.set(name, exp);
    return exp;
  }

  /** Remove from the catalog so that no new client can select it. */
  delete(name: string): NbdExport | undefined {
    const exp = this.#exports.get(name);
    this.#exports.delete(name);
    return exp;
  }

  /** The export a client name selects ("" is the default export), if any. */
  resolve(name: string): NbdExport | undefined {
    const direct = this.#exports.get(name);
    if (direct || name !== "") return direct;
    if (this.#defaultName !== undefined) return this.#exports.get(this.#defaultName);
    if (this.#exports.size === 1) return this.#exports.values().next().value;
    return undefined;
  }

  /** Every export, in insertion order. */
  list(): NbdExport[] {
    return [...this.#exports.values()];
  }
}

/**
 * Transmission flags for an export. Write-side features are not advertised
 * on a read-only export (they could only fail); DF only makes sense once
 * structured replies are negotiated, as the spec requires.
 */
export function transmissionFlags(exp: NbdExport, structuredReplies: boolean): number {
  let flags = TX.HAS_FLAGS | TX.SEND_FLUSH | TX.SEND_CACHE;
  if (exp.readOnly) flags |= TX.READ_ONLY;
  else flags |= TX.SEND_FUA | TX.SEND_TRIM | TX.SEND_WRITE_ZEROES | TX.SEND_FAST_ZERO;
  if (structuredReplies) flags |= TX.SEND_DF;
  if (exp.device.canMultiConn) flags |= TX.CAN_MULTI_CONN;
  return flags;
}

/** The spec's constraints on advertised block sizes ("Block size constraints"). */
export function checkBlockSizes(b: BlockSizes): void {
  const pow2 = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
  if (!pow2(b.minimum) || b.minimum > 65536) {
    throw new RangeError(`minimum block size must be a power of 2 up to 65536, got ${b.minimum}`);
  }
  if (!pow2(b.preferred) || b.preferred < Math.max(b.minimum, 512)) {
    throw new RangeError(`preferred block size must be a power of 2 >= max(minimum, 512)`);
  }
  if (
    !Number.isInteger(b.maximum) ||
    b.maximum > 0xffffffff ||
    b.maximum < b.preferred ||
    (b.maximum % b.minimum !== 0 && b.maximum !== 0xffffffff)
  ) {
    throw new RangeError(`maximum block size must be a multiple of minimum, >= preferred`);
  }
}
