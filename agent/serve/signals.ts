/**
 * How `serve` and `agent run` stop: the first SIGTERM or SIGINT asks for a
 * clean stop (drain, flush); a second one while that runs means "now".
 */

/**
 * Resolves with the first SIGTERM/SIGINT; a later one exits the process at
 * once with `secondExitCode`. Call it before taking anything, so that a
 * signal during startup also ends in the clean stop instead of Node's
 * default kill.
 */
export function stopSignal(secondExitCode: number): Promise<NodeJS.Signals> {
  return new Promise((res) => {
    const onSignal = (signal: NodeJS.Signals) => {
      process.removeListener("SIGTERM", onSignal);
      process.removeListener("SIGINT", onSignal);
      process.once("SIGTERM", () => process.exit(secondExitCode));
      process.once("SIGINT", () => process.exit(secondExitCode));
      res(signal);
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}
