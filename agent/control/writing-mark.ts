/**
 * The local sign that this node writes a volume at an epoch: an empty file
 * `writing.<epoch>` in the volume's dirty-log directory, made just before
 * the volume takes writes and removed once its export is drained and
 * flushed. Found at open, it says that the last writer here (this agent,
 * before a crash or a kill) stopped with writes perhaps in flight, which
 * may have reached some replicas and not others.
 *
 * Marks of other epochs are dropped: another writer came in between, and
 * the control plane dealt with the replicas then (arbiter/fence.ts).
 */
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

const MARK = /^writing\.\d+$/;

function markPath(dir: string, epoch: number): string {
  return join(dir, `writing.${epoch}`);
}

/** Make the mark; resolves with whether it was there already (the last writer here stopped uncleanly). */
export async function takeWritingMark(dir: string, epoch: number): Promise<boolean> {
  await mkdir(dir, { recursive: true });
  for (const name of await readdir(dir)) {
    if (MARK.test(name) && name !== `writing.${epoch}`) await rm(join(dir, name), { force: true });
  }
  try {
    await writeFile(markPath(dir, epoch), "", { flag: "wx" });
    return false;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return true;
    throw err;
  }
}

/** The volume stopped cleanly (or never took a write): no mark. */
export async function dropWritingMark(dir: string, epoch: number): Promise<void> {
  await rm(markPath(dir, epoch), { force: true });
}
