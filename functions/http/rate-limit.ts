/**
 * Rate limits on the calls that change something (every method but GET and
 * HEAD), one token bucket per credential: so that one bad agent, or one
 * leaked admin key or join token, cannot take the registry's throughput
 * from the sweeper and the other nodes. A node holds one credential, so
 * its bucket is the node's.
 *
 * The buckets live in the memory of each instance, and that is a choice:
 * on Flex Consumption instances come and go and do not share memory, and a
 * shared bucket would cost a Table transaction per call, the very thing
 * being bounded. So the limit is per instance, and what it bounds in total
 * is the limit times the instances: at the defaults and bicep/main.bicep's
 * `maximumInstanceCount` of 40, one node's changes at 2 a second × 40 = 80
 * a second, one key's at 20 × 40 = 800 a second (plus one burst per
 * instance), against the registry account's 20,000 transactions a second.
 * Honest callers are far below: an agent reports when something changes,
 * at most about once a second (agent/control/report-loop.ts; its
 * heartbeats go to the liveness table, not here), and the CLI sends one
 * change per command.
 *
 * A bucket is charged only once the credential has verified, so nobody can
 * spend another's bucket by presenting its identity without its secret.
 * A credential whose bucket is empty is refused before it is verified, so
 * a flood costs no registry read. Buckets are held for at most
 * `maxCallers` credentials per kind, least recently used dropped first:
 * only verified credentials are ever added, and a bucket untouched for
 * `burst / perSecond` seconds is full again, so dropping it loses nothing
 * unless more than `maxCallers` callers of a kind are all spending at once.
 */
import { createHash } from "node:crypto";

/** One token bucket's shape: `burst` calls at once, refilled at `perSecond`. */
export interface RateLimit {
  perSecond: number;
  burst: number;
}

export interface RateLimits {
  /** Each node (its credential). */
  node: RateLimit;
  /** Each admin key and each join token. */
  key: RateLimit;
  /** Most credentials of one kind whose buckets are held. */
  maxCallers: number;
}

export const DEFAULT_RATE_LIMITS: RateLimits = {
  node: { perSecond: 2, burst: 120 },
  key: { perSecond: 20, burst: 300 },
  maxCallers: 10_000,
};

/** Methods that change nothing, and are not limited. */
const READS = new Set(["GET", "HEAD"]);

/** Whether calls with `method` are rate limited. */
export function isLimited(method: string): boolean {
  return !READS.has(method.toUpperCase());
}

interface Bucket {
  tokens: number;
  /** When `tokens` was counted, in ms of the limiter's clock. */
  at: number;
}

/** Token buckets of one kind of caller. */
export class TokenBuckets {
  readonly #limit: RateLimit;
  readonly #maxCallers: number;
  readonly #now: () => number;
  /** In order of last use, oldest first (a Map iterates in insertion order). */
  readonly #buckets = new Map<string, Bucket>();

  constructor(limit: RateLimit, maxCallers: number, now: () => number) {
    this.#limit = limit;
    this.#maxCallers = maxCallers;
    this.#now = now;
  }

  /** Buckets held now. */
  get size(): number {
    return this.#buckets.size;
  }

  /** Milliseconds until `id` may make a call; 0 when it may now. Spends nothing, adds nothing. */
  waitFor(id: string): number {
    const bucket = this.#buckets.get(id);
    return bucket ? this.#wait(this.#refill(bucket)) : 0;
  }

  /** Spend one call of `id`: 0 when admitted, else milliseconds until one would be (nothing spent). */
  take(id: string): number {
    const bucket = this.#buckets.get(id) ?? { tokens: this.#limit.burst, at: this.#now() };
    this.#refill(bucket);
    // Moved to the end: the most recently used.
    this.#buckets.delete(id);
    this.#buckets.set(id, bucket);
    if (this.#buckets.size > this.#maxCallers) {
      const oldest = this.#buckets.keys().next().value as string;
      this.#buckets.delete(oldest);
    }
    if (bucket.tokens < 1) return this.#wait(bucket);
    bucket.tokens -= 1;
    return 0;
  }

  #refill(bucket: Bucket): Bucket {
    const now = this.#now();
    // A clock stepped back counts as no time passed, not as a debt to wait out.
    const elapsed = Math.max(0, now - bucket.at);
    bucket.tokens = Math.min(this.#limit.burst, bucket.tokens + (elapsed / 1000) * this.#limit.perSecond);
    bucket.at = now;
    return bucket;
  }

  #wait(bucket: Bucket): number {
    return bucket.tokens >= 1 ? 0 : Math.ceil(((1 - bucket.tokens) / this.#limit.perSecond) * 1000);
  }
}

/** The buckets of nodes and of keys, looked up by a credential's fingerprint. */
export class CallerLimits {
  readonly nodes: TokenBuckets;
  readonly keys: TokenBuckets;

  /** `now` in milliseconds (the app's clock). */
  constructor(limits: RateLimits, now: () => number) {
    this.nodes = new TokenBuckets(limits.node, limits.maxCallers, now);
    this.keys = new TokenBuckets(limits.key, limits.maxCallers, now);
  }

  /** Milliseconds until the holder of `presented` may make a change; 0 when it may now. */
  waitFor(presented: string): number {
    const id = fingerprint(presented);
    return Math.max(this.nodes.waitFor(id), this.keys.waitFor(id));
  }

  /** Spend one change of a verified credential: 0 when admitted, else the milliseconds to wait. */
  take(kind: "node" | "key", presented: string): number {
    return (kind === "node" ? this.nodes : this.keys).take(fingerprint(presented));
  }
}

/** What a bucket is filed under: never the secret itself, in memory or in a heap dump. */
function fingerprint(presented: string): string {
  return createHash("sha256").update(presented).digest("base64url").slice(0, 22);
}
