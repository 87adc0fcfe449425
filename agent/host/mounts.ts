/**
 * What the kernel says about mounts and loop devices: /proc/self/mountinfo
 * and /sys/block/loop*, read directly rather than through losetup, which
 * stats the backing file and so fails on a FUSE file whose daemon is gone.
 */
import { readdir, readFile } from "node:fs/promises";

/**
 * Mount points in /proc/self/mountinfo (or a process's, as that process
 * sees them: its mount namespace may not be ours), octal escapes (\040 for
 * a space) decoded.
 */
export async function mountPoints(pid: number | "self" = "self"): Promise<string[]> {
  const text = await readFile(`/proc/${pid}/mountinfo`, "utf8");
  return text
    .split("\n")
    .filter(Boolean)
    .map((line) => unescapeMountPath(line.split(" ")[4] ?? ""));
}

export function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export async function isMountPoint(dir: string): Promise<boolean> {
  return (await mountPoints()).includes(dir);
}

/** Whether `dir` is a mount point in the mount namespace of process `pid` (false when it is gone). */
export async function isMountPointOf(pid: number, dir: string): Promise<boolean> {
  return (await mountPoints(pid).catch(() => [] as string[])).includes(dir);
}

/** Loop devices (`/dev/loopN`) whose backing file is `file`. */
export async function loopsBackedBy(file: string): Promise<string[]> {
  const found: string[] = [];
  for (const name of await readdir("/sys/block").catch(() => [] as string[])) {
    if (!/^loop\d+$/.test(name)) continue;
    const backing = await loopBackingFile(`/dev/${name}`);
    if (backing === file) found.push(`/dev/${name}`);
  }
  return found;
}

/**
 * Backing file of a loop device, or null when it has none. The kernel
 * appends " (deleted)" when the file was unlinked; that is still the file.
 */
export async function loopBackingFile(device: string): Promise<string | null> {
  const name = device.slice("/dev/".length);
  try {
    const text = (await readFile(`/sys/block/${name}/loop/backing_file`, "utf8")).replace(/\n$/, "");
    return text.replace(/ \(deleted\)$/, "");
  } catch {
    return null;
  }
}
