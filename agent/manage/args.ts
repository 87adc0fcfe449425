/**
 * Option parsers of the management commands. They throw commander's
 * `InvalidArgumentError`, so a bad value is a usage error (exit 2) found
 * before any request is sent.
 */
import { InvalidArgumentError } from "commander";
import { parseDuration, parseSize } from "../serve/args.ts";

/** Run a parser of ours; its error becomes commander's, so a bad value is a usage error (exit 2). */
export function usage<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/** "8GiB" -> bytes (multiple of 512, at most 8 TiB). */
export function asSize(text: string): number {
  return usage(() => parseSize(text));
}

/** "24h", "90m" -> whole seconds. */
export function asSeconds(text: string): number {
  return usage(() => Math.round(parseDuration(text) / 1000));
}

/** A whole number from 1 up. */
export function asCount(text: string): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < 1) {
    throw new InvalidArgumentError(`"${text}" is not a whole number from 1 up`);
  }
  return Number(text);
}

/**
 * Repeatable list option: `--pool a --pool b` and `--pool a,b` both give
 * `["a", "b"]` (names never hold commas).
 */
export function collect(text: string, previous: string[] | undefined): string[] {
  const names = text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  return [...(previous ?? []), ...names];
}

/** `automatic` or `manual`. */
export function asFailover(text: string): "automatic" | "manual" {
  if (text !== "automatic" && text !== "manual") {
    throw new InvalidArgumentError(`"${text}" is not automatic or manual`);
  }
  return text;
}
