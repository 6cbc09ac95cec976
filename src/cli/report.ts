// The results table printed by `loco train` and `loco eval`, and the --baselines list they share.
import { BASELINE_NAMES, type BaselineName, type ReadoutReport } from "../learning/readout";
import { UsageError } from "./options";
import { formatTable } from "./table";

const pct = (x: number | undefined): string => (x === undefined ? "-" : `${(x * 100).toFixed(2)}%`);
const BASELINE_LABELS: Record<string, string> = {
  randomInit: "random-init encoder",
  supervised: "supervised end to end",
  rawPixels: "raw pixels",
};

export function formatReport(title: string, dataset: string, r: ReadoutReport): string {
  const rows: string[][] = [[title, pct(r.linear.top1), pct(r.knn.top1)]];
  for (const s of r.perStage ?? []) rows.push([`  stage ${s.stage}`, pct(s.linear.top1), pct(s.knn.top1)]);
  for (const [k, b] of Object.entries(r.baselines))
    rows.push([BASELINE_LABELS[k] ?? k, pct(b.linear.top1), pct(b.knn.top1)]);
  return formatTable([`${dataset}: encoder`, "linear top-1", "kNN top-1"], rows);
}

/** Parses --baselines: a comma-separated list of baseline names, or "none". */
export function parseBaselines(text: string | undefined): BaselineName[] {
  const t = (text ?? "none").trim();
  if (t === "none" || t === "") return [];
  const names = t.split(",").map((s) => s.trim());
  for (const n of names) {
    if (!BASELINE_NAMES.includes(n as BaselineName)) {
      throw new UsageError(`--baselines: unknown baseline '${n}' (expected ${BASELINE_NAMES.join(", ")} or none)`);
    }
  }
  return names as BaselineName[];
}
