/**
 * `?force=true|false`, the query of the operations that can skip a safety
 * step on request (delete an attached volume, detach without waiting for
 * the drain). Anything else is a 400 that names the parameter.
 */
import { z } from "zod";

export const ForceQuery = z.strictObject({
  force: z
    .enum(["true", "false"], { error: "force must be true or false" })
    .default("false")
    .transform((v) => v === "true"),
});
