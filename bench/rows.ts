/**
 * Rows of the `npm run bench` table for sections whose numbers are shown as
 * text (the control plane and agent sections), and the statistics they use.
 */

/** A row of the bench table whose ratio, target and verdict are already text. */
export interface TextRow {
  section: string;
  workload: string;
  ours: string;
  peer: string;
  ratio: string;
  target: string;
  verdict: string;
}

/** Nearest-rank percentile of `samples` (0 < p <= 100). */
export function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export const ms = (v: number): string => `${v.toFixed(1)} ms`;

/** Row makers of one section. */
export function sectionRows(section: string) {
  return {
    /** Value against an upper bound: ratio = value / boundValue, met when <= 1. */
    atMost(workload: string, value: number, shown: string, bound: string, boundValue: number, peer = "-"): TextRow {
      const ratio = value / boundValue;
      return {
        section,
        workload,
        ours: shown,
        peer,
        ratio: ratio.toFixed(2),
        target: `<= 1 (${bound})`,
        verdict: ratio <= 1 ? "met" : "MISSED",
      };
    },
    /** A number shown without a target. */
    reported(workload: string, shown: string, peer = "-"): TextRow {
      return { section, workload, ours: shown, peer, ratio: "-", target: "-", verdict: "" };
    },
  };
}
