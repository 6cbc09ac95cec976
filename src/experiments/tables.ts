// An experiment's tables: results.json (everything), results.md (for reading and the README) and
// results.csv (one column per number), all with mean ± std over seeds. Written from every finished
// run of the experiment directory: rows without one are shown as pending.
import * as fs from "node:fs";
import * as path from "node:path";
import { finetuneResultFile } from "../learning/finetune";
import { isRunDir, readRun } from "../report/rundata";
import { type RowSummary, type Stat, baselineRow, formatPercent, summarizeRows } from "../report/summary";
import { type ExperimentSpec, flagArgs, percentLabel } from "./grid";
import type { ExperimentCell } from "./runner";

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

const fixed = (s: Stat | null, digits: number, scale = 1): string =>
  s === null
    ? "-"
    : s.n > 1
      ? `${(s.mean * scale).toFixed(digits)} ± ${(s.std * scale).toFixed(digits)}`
      : (s.mean * scale).toFixed(digits);

const STAGES = [1, 2, 3, 4];

/** The fine-tuning fractions of the grid (none if it has no fine-tuning). */
const fractionsOf = (spec: ExperimentSpec): number[] => spec.finetune?.fractions ?? [];
const finetuneOf = (r: RowSummary, fraction: number): Stat | null =>
  r.finetune.find((f) => f.fraction === fraction)?.top1 ?? null;

/** How much of the grid has finished (runs, and fine-tunings by result file). */
export interface GridProgress {
  runs: { finished: number; total: number };
  finetunes: { finished: number; total: number };
}

export function gridProgress(spec: ExperimentSpec, dir: string, cells: ExperimentCell[]): GridProgress {
  const fractions = fractionsOf(spec);
  const progress = { runs: { finished: 0, total: cells.length }, finetunes: { finished: 0, total: 0 } };
  for (const c of cells) {
    const runDir = path.join(dir, c.dir);
    if (fs.existsSync(path.join(runDir, "results.json"))) progress.runs.finished++;
    for (const random of c.row === spec.rows[0].name ? [false, true] : [false]) {
      for (const f of fractions) {
        progress.finetunes.total++;
        if (fs.existsSync(finetuneResultFile(runDir, f, random))) progress.finetunes.finished++;
      }
    }
  }
  return progress;
}

/** The grid's baselines that no finished run has read out yet, as pending rows. */
function withPendingBaselines(spec: ExperimentSpec, rows: RowSummary[]): RowSummary[] {
  const pending = spec.baselines
    .map((b) => b.replace(/-/g, " "))
    .filter((label) => !rows.some((r) => r.kind === "baseline" && r.row === label))
    .map((label) => baselineRow(label, spec.seeds.length, 0));
  return [...rows, ...pending];
}

/** The seeds column: finished/total for a method row, the seeds found for a baseline, or "pending". */
const seedsCell = (r: RowSummary): string =>
  r.finished === 0 ? "pending" : r.kind === "baseline" ? String(r.finished) : `${r.finished}/${r.runs}`;

export function resultsMarkdown(
  spec: ExperimentSpec,
  rows: RowSummary[],
  reference: { title: string; values: Record<string, string> },
  progress?: GridProgress,
): string {
  const head = [
    "row",
    "seeds",
    "linear top-1 %",
    "kNN top-1 %",
    ...STAGES.map((s) => `stage ${s} linear %`),
    ...fractionsOf(spec).map((f) => `fine-tune ${percentLabel(f)} top-1 %`),
    "peak MiB",
    "step s",
    "img/s",
    "wall s",
    reference.title,
  ];
  const lines = [
    `# ${spec.name}: results`,
    "",
    `Protocol: ${spec.protocol}. Mean ± std over ${spec.seeds.length} seed${spec.seeds.length > 1 ? "s" : ""} (${spec.seeds.join(", ")}).`,
    ...(progress !== undefined &&
    (progress.runs.finished < progress.runs.total || progress.finetunes.finished < progress.finetunes.total)
      ? [
          `**Unfinished grid:** ${progress.runs.finished} of ${progress.runs.total} runs and ${progress.finetunes.finished} of ${progress.finetunes.total} fine-tunings have finished. Rows marked pending have no finished run yet; a row with fewer finished seeds than the grid's shows the mean ± std of the seeds it has.`,
        ]
      : []),
    "Peak MiB: bytes libtorch held during one training step at the run's batch size (counting allocator).",
    `The last column is the paper's ImageNet figure (ResNet-50, 100 epochs) from the authors' response, a different scale.`,
    ...(spec.finetune === undefined
      ? []
      : [
          `Fine-tune: the encoder unfrozen with a fresh linear head on ${fractionsOf(spec).map(percentLabel).join(" / ")} of the labelled train images (class-balanced, seeded; \`loco finetune\`${flagArgs(spec.finetune.flags).length > 0 ? ` ${flagArgs(spec.finetune.flags).join(" ")}` : ""}); the random-init row starts from a randomly initialised encoder.`,
        ]),
    "",
    `| ${head.join(" | ")} |`,
    `| ${head.map((_, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`,
  ];
  for (const r of rows) {
    const cells = [
      r.kind === "baseline" ? `*${r.row}*` : r.row,
      seedsCell(r),
      formatPercent(r.linear),
      formatPercent(r.knn),
      ...STAGES.map((s) => formatPercent(r.perStage.find((p) => p.stage === s)?.linear ?? null)),
      ...fractionsOf(spec).map((f) => formatPercent(finetuneOf(r, f))),
      fixed(r.peakBytes, 1, 2 ** -20),
      fixed(r.stepSeconds, 3),
      fixed(r.imagesPerSecond, 0),
      fixed(r.wallSeconds, 0),
      reference.values[r.row] ?? "-",
    ];
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return `${lines.join("\n")}\n`;
}

export function resultsCsv(
  rows: RowSummary[],
  reference: { values: Record<string, string> },
  fractions: number[] = [],
): string {
  const stats: [string, (r: RowSummary) => Stat | null][] = [
    ["linear_top1", (r) => r.linear],
    ["knn_top1", (r) => r.knn],
    ...STAGES.map((s): [string, (r: RowSummary) => Stat | null] => [
      `stage${s}_linear_top1`,
      (r) => r.perStage.find((p) => p.stage === s)?.linear ?? null,
    ]),
    ...STAGES.map((s): [string, (r: RowSummary) => Stat | null] => [
      `stage${s}_knn_top1`,
      (r) => r.perStage.find((p) => p.stage === s)?.knn ?? null,
    ]),
    ...fractions.map((f): [string, (r: RowSummary) => Stat | null] => [
      `finetune_${+(f * 100).toPrecision(3)}pct_top1`,
      (r) => finetuneOf(r, f),
    ]),
    ["peak_bytes", (r) => r.peakBytes],
    ["step_seconds", (r) => r.stepSeconds],
    ["images_per_second", (r) => r.imagesPerSecond],
    ["train_seconds", (r) => r.trainSeconds],
    ["wall_seconds", (r) => r.wallSeconds],
  ];
  const quote = (s: string): string => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
  const head = [
    "row",
    "kind",
    "runs",
    "finished",
    ...stats.flatMap(([n]) => [`${n}_mean`, `${n}_std`]),
    "paper_imagenet_top1",
  ];
  const lines = [head.join(",")];
  for (const r of rows) {
    const values = stats.flatMap(([, f]) => {
      const s = f(r);
      return s === null ? ["", ""] : [String(s.mean), String(s.std)];
    });
    lines.push(
      [quote(r.row), r.kind, String(r.runs), String(r.finished), ...values, quote(reference.values[r.row] ?? "")].join(
        ",",
      ),
    );
  }
  return `${lines.join("\n")}\n`;
}

/** Writes results.json, results.md and results.csv; returns the number of rows. */
export function writeResultTables(
  dir: string,
  spec: ExperimentSpec,
  cells: ExperimentCell[],
  reference: { title: string; values: Record<string, string> },
): number {
  const inputs = cells.map((c) => {
    const runDir = path.join(dir, c.dir);
    return {
      row: c.row,
      seed: c.seed,
      wallSeconds: c.wallSeconds,
      run: isRunDir(runDir) ? readRun(runDir) : null,
    };
  });
  const rows = withPendingBaselines(spec, summarizeRows(inputs));
  const progress = gridProgress(spec, dir, cells);
  writeAtomic(
    path.join(dir, "results.json"),
    `${JSON.stringify(
      {
        name: spec.name,
        protocol: spec.protocol,
        seeds: spec.seeds,
        finetune: spec.finetune ?? null,
        progress,
        reference,
        rows: rows.map((r) => ({ ...r, reference: reference.values[r.row] ?? null })),
        runs: cells,
      },
      null,
      2,
    )}\n`,
  );
  writeAtomic(path.join(dir, "results.md"), resultsMarkdown(spec, rows, reference, progress));
  writeAtomic(path.join(dir, "results.csv"), resultsCsv(rows, reference, fractionsOf(spec)));
  return rows.length;
}
