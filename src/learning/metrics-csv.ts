// metrics.csv beside metrics.jsonl: one row per record, one column per field (spreadsheets and
// pandas read it directly). Arrays become numbered columns: a run's losses are loss_stage1 …
// loss_stageK, named after the 1-based encoder stage of each loss.
import * as fs from "node:fs";
import * as path from "node:path";
import { readMetrics } from "./metrics";

/** RFC 4180 quoting: fields with a comma, quote or newline are quoted, quotes doubled. */
export function csvField(value: unknown): string {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isFinite(value) ? String(value) : "";
  const text = typeof value === "object" ? JSON.stringify(value) : String(value);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/**
 * Flattens a record: loss arrays by stage, other numeric arrays by index, nested objects with
 * dotted names (results' linear.top1), anything else (lists of objects) as JSON.
 */
function flatten(
  record: Record<string, unknown>,
  lossStages: number[],
  prefix = "",
  out = new Map<string, unknown>(),
): Map<string, unknown> {
  for (const [name, value] of Object.entries(record)) {
    const key = `${prefix}${name}`;
    if (name === "loss" && prefix === "" && Array.isArray(value)) {
      value.forEach((v, i) => out.set(`loss_stage${lossStages[i] ?? i + 1}`, v));
    } else if (name === "finalLoss" && Array.isArray(value)) {
      value.forEach((v, i) => out.set(`${key}_stage${lossStages[i] ?? i + 1}`, v));
    } else if (Array.isArray(value) && value.every((v) => typeof v === "number" || v === null)) {
      value.forEach((v, i) => out.set(`${key}_${i + 1}`, v));
    } else if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      flatten(value as Record<string, unknown>, lossStages, `${key}.`, out);
    } else {
      out.set(key, value);
    }
  }
  return out;
}

/**
 * The CSV text of metrics records: the columns are every field seen, in first-seen order, with
 * `type` first; a record lacking a field leaves its cell empty.
 */
export function metricsCsv(records: readonly object[], lossStages: number[] = []): string {
  const rows = records.map((r) => flatten(r as Record<string, unknown>, lossStages));
  const columns: string[] = ["type"];
  for (const row of rows) for (const key of row.keys()) if (!columns.includes(key)) columns.push(key);
  const lines = [columns.join(",")];
  for (const row of rows) lines.push(columns.map((c) => csvField(row.get(c))).join(","));
  return `${lines.join("\n")}\n`;
}

function lossStagesOf(runDir: string): number[] {
  try {
    const saved = JSON.parse(fs.readFileSync(path.join(runDir, "config.json"), "utf8")) as {
      resolved?: { learning?: { lossStages?: number[] } };
    };
    return [...(saved.resolved?.learning?.lossStages ?? [])].sort((a, b) => a - b);
  } catch {
    return [];
  }
}

/**
 * Writes RUN/metrics.csv from RUN/metrics.jsonl (atomically). Never throws: a run must not fail
 * for its spreadsheet copy; returns the error message instead (null on success or no metrics).
 */
export function writeMetricsCsv(runDir: string): string | null {
  const source = path.join(runDir, "metrics.jsonl");
  if (!fs.existsSync(source)) return null;
  const file = path.join(runDir, "metrics.csv");
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    fs.writeFileSync(tmp, metricsCsv(readMetrics(source), lossStagesOf(runDir)));
    fs.renameSync(tmp, file);
    return null;
  } catch (error) {
    fs.rmSync(tmp, { force: true });
    return `could not write ${file} (${(error as Error).message})`;
  }
}
