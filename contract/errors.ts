/**
 * The error body of every failed API call and its stable codes. Clients
 * branch on `code`, never on `message`; a code, once published, keeps its
 * meaning and its HTTP status.
 */
import { z } from "zod";

/** Every error code the API answers with, and the HTTP status it always comes with. */
export const ERROR_STATUS = {
  /** The body is not JSON (or is empty where JSON is required). */
  InvalidJson: 400,
  /** Path, query or body fails the schema; `details.issues` says where. */
  InvalidRequest: 400,
  /** No credentials, or credentials that do not match. */
  Unauthorized: 401,
  /** Valid credentials that may not do this. */
  Forbidden: 403,
  /** No such route. */
  NotFound: 404,
  VolumeNotFound: 404,
  PoolNotFound: 404,
  NodeNotFound: 404,
  TokenNotFound: 404,
  VolumeExists: 409,
  /** The node name is registered; remove the node before it joins again. */
  NodeExists: 409,
  /** The node still owns volumes; `details.volumes` names them. */
  NodeInUse: 409,
  /** The pool name, or its account and container, is already registered. */
  PoolExists: 409,
  /** The pool still holds replicas; `details.volumes` names them. */
  PoolInUse: 409,
  /** The pool takes no new replicas (being removed, repaired or replaced). */
  PoolNotUsable: 409,
  /** Fewer usable pools than the replicas asked for. */
  InsufficientPools: 409,
  /** The volume is attached (or attaching, detaching, fenced); `details.ownerNode` names the owner. */
  VolumeAttached: 409,
  /** The volume is being created, attached, detached, fenced or deleted. */
  VolumeBusy: 409,
  /** The node may not take this volume: cordoned, not READY, or outside the volume's requiredNodes. */
  NodeNotEligible: 409,
  /** An attach naming no node found none READY, uncordoned and within the volume's requiredNodes. */
  NoEligibleNode: 409,
  /** A blob named for deletion is claimed by a volume, recent, or leased, or a replica container still holds blobs; `details.blobs` says which and why. */
  NotAnOrphan: 409,
  /** The record changed under a concurrent request more often than retried; try again. */
  Conflict: 409,
  /** The request body exceeds the limit. */
  PayloadTooLarge: 413,
  /** The request's headers exceed the server's limit; the connection is closed. */
  HeadersTooLarge: 431,
  /** The request is not valid HTTP (the server's parser refused it); the connection is closed. */
  MalformedRequest: 400,
  /** The request did not arrive in full in time; the connection is closed. */
  RequestTimeout: 408,
  /**
   * This caller (a node, an admin key, a join token) sent more changes than
   * its rate allows; nothing was changed. Retry after `Retry-After` seconds.
   */
  TooManyRequests: 429,
  /** A pool being registered could not be reached or refused the credentials. */
  PoolUnreachable: 422,
  /**
   * A node's report carries an event the node may not report (a type agents
   * do not report, a volume it did not write at that epoch, a pool that
   * volume does not use); nothing of the report was recorded.
   * `details.refused` lists each such event's `index` and `reason`.
   */
  EventRefused: 422,
  /** Internal failure; the message says nothing more on purpose. */
  Internal: 500,
  /** A pool's storage failed during the operation; retrying is safe. */
  StorageFailed: 502,
} as const;

export type ApiErrorCode = keyof typeof ERROR_STATUS;

export const API_ERROR_CODES = Object.keys(ERROR_STATUS) as [ApiErrorCode, ...ApiErrorCode[]];

/** `{ "error": { "code", "message", "details"? } }` */
export const ErrorBody = z.object({
  error: z.object({
    code: z.enum(API_ERROR_CODES),
    message: z.string(),
    details: z.unknown().optional(),
  }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;
