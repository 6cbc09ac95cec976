// The results table printed by `loco train` and `loco eval`.
import type { ReadoutReport } from "../learning/readout";
import { formatTable } from "./table";

const pct = (x: number | null | undefined): string =>
  x === undefined ? "-" : x === null ? "diverged" : `${(x * 100).toFixed(2)}%`;
const BASELINE_LABELS: Record<string, string> = {
  randomInit: "random-init encoder",
  supervised: "supervised end to end",
  rawPixels: "raw pixels",
};

/** The readout table; a run made with `--readout none` has only its title row. */
export function formatReport(title: string, dataset: string, r: Partial<ReadoutReport>): string {
  const rows: string[][] = [[title, pct(r.linear?.top1), pct(r.knn?.top1)]];
  for (const s of r.perStage ?? []) rows.push([`  stage ${s.stage}`, pct(s.linear.top1), pct(s.knn.top1)]);
  for (const [k, b] of Object.entries(r.baselines ?? {}))
    rows.push([BASELINE_LABELS[k] ?? k, pct(b.linear.top1), pct(b.knn.top1)]);
  return formatTable([`${dataset}: encoder`, "linear top-1", "kNN top-1"], rows);
}
