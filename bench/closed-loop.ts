/**
 * The closed loop of the throughput measurements: a fixed number of workers,
 * each starting its next operation as soon as the last one finished.
 */

/** Run `workers` loops of `op(n)` (n counts up across all loops) for `seconds`; returns completed ops. */
export async function closedLoop(workers: number, seconds: number, op: (n: number) => Promise<unknown>): Promise<number> {
  const end = performance.now() + seconds * 1000;
  let next = 0;
  let done = 0;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (performance.now() < end) {
        await op(next++);
        done++;
      }
    }),
  );
  return done;
}
