// `loco report`: one self-contained report.html for a run directory or an experiment directory,
// plus an SVG copy of every chart (charts/NAME.svg) for READMEs and papers.
import * as fs from "node:fs";
import * as path from "node:path";
import type { TrainOptions } from "../learning/options";
import {
  type BarPoint,
  type Chart,
  type KnnPoint,
  type LossPoint,
  type StagePoint,
  knnChart,
  lossChart,
  memoryChart,
  perStageChart,
  finetuneChart,
  readoutChart,
  renderSvg,
  timeChart,
} from "./charts";
import { writeMetricsCsv } from "../learning/metrics-csv";
import { type ReportPage, renderPage } from "./html";
import { type RunData, isExperimentDir, readExperiment, readRun, ReportInputError } from "./rundata";
import { type RowInput, type RowSummary, type Stat, summarizeRows } from "./summary";

/** A short label of a run's method and the knobs that differ from its preset's usual values. */
export function describeRun(config: TrainOptions | null, fallback: string): string {
  if (config === null) return fallback;
  const l = config.learning;
  const parts: string[] = [config.method];
  if (l.mlpLayers !== 2) parts.push(`${l.mlpLayers}-layer MLP`);
  if (l.schedule === "sequential") parts.push("sequential");
  if (l.feedback === "alignment") parts.push("feedback alignment");
  return parts.join(", ");
}

export interface ReportInput {
  title: string;
  meta: string[];
  cells: RowInput[];
  reference?: ReportPage["reference"];
  notes: string[];
}

/** The rows and facts of a run or experiment directory. */
export function reportInput(target: string): ReportInput {
  if (isExperimentDir(target)) {
    const exp = readExperiment(target);
    const finished = exp.runs.filter((r) => r.data?.results != null).length;
    const ref = exp.info.reference as { title?: string; values?: Record<string, string> } | undefined;
    return {
      title: `loco experiment: ${exp.name}`,
      meta: [
        `${exp.rows.length} rows, ${exp.runs.length} runs (${finished} finished); directory ${target}`,
        ...(typeof exp.info.protocol === "string" ? [`protocol: ${exp.info.protocol}`] : []),
      ],
      cells: exp.runs.map((r) => ({
        row: r.row,
        run: r.data,
        seed: r.seed,
        wallSeconds: (r as { wallSeconds?: number }).wallSeconds,
      })),
      reference:
        ref?.title !== undefined && ref.values !== undefined ? { title: ref.title, values: ref.values } : undefined,
      notes: typeof exp.info.note === "string" ? [exp.info.note] : [],
    };
  }
  const run = readRun(target);
  const c = run.config;
  const label = describeRun(c, path.basename(target));
  const meta =
    c === null
      ? [`directory ${target}`]
      : [
          `${c.method} on ${c.trainData.name}, resnet${c.encoder.depth} width ${c.encoder.width}, ${c.epochs} epochs, batch ${c.batchSize}, ${c.optimizer} lr ${c.lr.toPrecision(3)}, seed ${c.seed}`,
          `directory ${target}`,
        ];
  return {
    title: `loco run: ${label}`,
    meta,
    cells: [{ row: label, run, seed: c?.seed ?? 0 }],
    notes: run.results === null ? ["The run has no results.json yet (unfinished): readout figures are missing."] : [],
  };
}

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/** Mean over a row's seeds of values keyed by x (steps, epochs). */
function meanSeries(runs: RunData[], pick: (r: RunData) => [number, number][]): [number, number][] {
  const byX = new Map<number, number[]>();
  for (const r of runs) for (const [x, y] of pick(r)) byX.set(x, [...(byX.get(x) ?? []), y]);
  return [...byX.entries()].sort((a, b) => a[0] - b[0]).map(([x, ys]) => [x, mean(ys)]);
}

const bar = (row: string, group: string, kind: string, s: Stat | null, scale = 1): BarPoint[] =>
  s === null
    ? []
    : [{ row, group, kind, mean: s.mean * scale, lo: (s.mean - s.std) * scale, hi: (s.mean + s.std) * scale }];

/** The charts that have data, in page order. */
export function buildCharts(cells: RowInput[], rows: RowSummary[]): Chart[] {
  const labels = [...new Set(cells.map((c) => c.row))];
  const runsOf = (row: string): RunData[] =>
    cells.filter((c) => c.row === row && c.run !== null).map((c) => c.run as RunData);
  const loss: LossPoint[] = [];
  const knn: KnnPoint[] = [];
  for (const row of labels) {
    const runs = runsOf(row);
    const stages = runs[0]?.lossStages ?? [];
    stages.forEach((stage, i) => {
      for (const [step, value] of meanSeries(runs, (r) =>
        r.steps.flatMap((s) => (s.loss[i] == null ? [] : [[s.step, s.loss[i]] as [number, number]])),
      ))
        loss.push({ row, stage: `stage ${stage}`, step, loss: value });
    });
    for (const [epoch, value] of meanSeries(runs, (r) =>
      r.epochs.flatMap((e) => (e.knnTop1 === null ? [] : [[e.epoch, e.knnTop1] as [number, number]])),
    ))
      knn.push({ row, epoch, knn: value });
  }
  const readout = rows.flatMap((r) => [...bar(r.row, "linear", r.kind, r.linear), ...bar(r.row, "kNN", r.kind, r.knn)]);
  const perStage: StagePoint[] = rows.flatMap((r) =>
    r.perStage.flatMap((s) => [
      ...(s.linear ? [{ row: r.row, stage: s.stage, metric: "linear", top1: s.linear.mean }] : []),
      ...(s.knn ? [{ row: r.row, stage: s.stage, metric: "kNN", top1: s.knn.mean }] : []),
    ]),
  );
  const memory = rows.flatMap((r) => [
    ...bar(r.row, "peak", r.kind, r.peakBytes, 2 ** -20),
    ...bar(r.row, "activations at peak", r.kind, r.activationPeakBytes, 2 ** -20),
  ]);
  const time = rows.flatMap((r) => [
    ...bar(r.row, "seconds per step", r.kind, r.stepSeconds),
    ...bar(r.row, "images per second", r.kind, r.imagesPerSecond),
  ]);
  const finetune = rows.flatMap((r) =>
    r.finetune.flatMap((f) => bar(r.row, `${+(f.fraction * 100).toPrecision(3)}% of the labels`, r.kind, f.top1)),
  );
  const charts: Chart[] = [];
  if (loss.length > 0) charts.push(lossChart(loss, labels.length));
  if (knn.length > 0) charts.push(knnChart(knn));
  if (readout.length > 0) charts.push(readoutChart(readout));
  if (finetune.length > 0) charts.push(finetuneChart(finetune));
  if (perStage.length > 0) charts.push(perStageChart(perStage));
  if (memory.length > 0) charts.push(memoryChart(memory));
  if (time.length > 0) charts.push(timeChart(time));
  return charts;
}

export interface WrittenReport {
  html: string;
  svgs: string[];
  charts: string[];
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

/**
 * Writes OUT/report.html and OUT/charts/*.svg for a run or experiment directory (OUT defaults to
 * the directory itself). Runs without metrics.csv get one.
 */
export async function writeReport(target: string, options: { outDir?: string } = {}): Promise<WrittenReport> {
  if (!fs.existsSync(target)) throw new ReportInputError(`${target}: no such run or experiment directory`);
  const input = reportInput(target);
  for (const c of input.cells) {
    if (c.run !== null && !fs.existsSync(path.join(c.run.dir, "metrics.csv"))) writeMetricsCsv(c.run.dir);
  }
  const rows = summarizeRows(input.cells);
  const charts = buildCharts(input.cells, rows);
  const rendered = [];
  for (const chart of charts) rendered.push({ ...chart, svg: await renderSvg(chart.spec) });
  const notes = [...input.notes];
  if (!rows.some((r) => r.peakBytes !== null)) {
    notes.push("Peak memory is not recorded for this directory (loco experiment measures it for each grid row).");
  }
  const outDir = options.outDir ?? target;
  const chartDir = path.join(outDir, "charts");
  fs.mkdirSync(chartDir, { recursive: true });
  const svgs = rendered.map((c) => {
    const file = path.join(chartDir, `${c.name}.svg`);
    writeAtomic(file, c.svg);
    return file;
  });
  const html = path.join(outDir, "report.html");
  writeAtomic(
    html,
    renderPage({
      title: input.title,
      meta: input.meta,
      rows,
      reference: input.reference,
      charts: rendered,
      notes,
    }),
  );
  return { html, svgs, charts: rendered.map((c) => c.name) };
}
