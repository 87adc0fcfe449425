/**
 * Files the agent keeps in its state dir (node.json, binding records): root
 * only and written whole or not at all, so that a crash mid-write, even a
 * SIGKILL, leaves the old file or the new one and never half of either.
 */
import { randomBytes } from "node:crypto";
import { open, rename, rm } from "node:fs/promises";

/**
 * Write `text` to `path` through a temp file beside it, synced, then renamed
 * into place. The temp file is created 0600, so what it holds is never
 * readable by others, not even briefly; on failure it is removed.
 */
export async function writeStateFile(path: string, text: string): Promise<void> {
  const temp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    const handle = await open(temp, "wx", 0o600);
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}
