// The report's charts as Vega-Lite specs, rendered to static SVG in Node with vega's headless
// renderer (no browser, no network; the SVG needs no script to display).
import * as vega from "vega";
import { type TopLevelSpec, compile } from "vega-lite";

export interface Chart {
  /** File stem of the SVG copy (charts/NAME.svg) and the figure's id. */
  name: string;
  title: string;
  /** What the chart shows and how it was measured, under the figure. */
  caption: string;
  spec: TopLevelSpec;
}

const CONFIG = {
  font: "Helvetica, Arial, sans-serif",
  view: { stroke: "#ddd" },
  axis: { labelFontSize: 11, titleFontSize: 12, gridColor: "#eee" },
  legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 260 },
  header: { labelFontSize: 12, titleFontSize: 12 },
  range: { category: { scheme: "tableau10" } },
};

const base = (title: string) => ({
  $schema: "https://vega.github.io/schema/vega-lite/v5.json",
  title: { text: title, anchor: "start" as const, fontSize: 14 },
  background: "white",
  config: CONFIG,
});

/** Renders a Vega-Lite spec to an SVG document string. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

export interface LossPoint {
  row: string;
  stage: string;
  step: number;
  loss: number;
}

/** Training loss per loss stage over steps: one panel per stage, one line per row (or per stage for one run). */
export function lossChart(points: LossPoint[], rows: number): Chart {
  const single = rows <= 1;
  const line = {
    mark: { type: "line" as const, strokeWidth: 1.5 },
    encoding: {
      x: { field: "step", type: "quantitative" as const, title: "step", axis: { format: "d", tickMinStep: 1 } },
      y: { field: "loss", type: "quantitative" as const, title: "NT-Xent loss", scale: { zero: false } },
      color: single
        ? { field: "stage", type: "nominal" as const, title: "loss at" }
        : {
            field: "row",
            type: "nominal" as const,
            title: "run",
            sort: null,
            legend: { orient: "bottom" as const, columns: 3 },
          },
    },
  };
  const spec: TopLevelSpec = single
    ? { ...base("Training loss per stage"), data: { values: points }, width: 520, height: 260, ...line }
    : {
        ...base("Training loss per stage"),
        data: { values: points },
        facet: { column: { field: "stage", type: "nominal", title: null } },
        spec: { width: 170, height: 180, ...line },
        resolve: { scale: { y: "independent" } },
      };
  return {
    name: "loss",
    title: "Loss per stage",
    caption: "NT-Xent loss of each loss stage over optimizer steps (recorded every 10 steps and at epoch ends).",
    spec,
  };
}

export interface KnnPoint {
  row: string;
  epoch: number;
  knn: number;
}

/** Integer tick values for an axis of few epochs (else vega's own ticks). */
function epochTicks(epochs: number[]): { values?: number[]; format: string } {
  const distinct = [...new Set(epochs)].sort((a, b) => a - b);
  return distinct.length <= 20 ? { values: distinct, format: "d" } : { format: "d" };
}

/** kNN monitor accuracy over epochs, one line per row (mean over seeds). */
export function knnChart(points: KnnPoint[]): Chart {
  return {
    name: "knn",
    title: "kNN accuracy over epochs",
    caption:
      "Top-1 of the kNN monitor (k = 200, cosine) on a test subset after each epoch; mean over seeds where there are several.",
    spec: {
      ...base("kNN top-1 over epochs"),
      data: { values: points },
      width: 520,
      height: 260,
      mark: { type: "line", point: true, strokeWidth: 1.5 },
      encoding: {
        x: { field: "epoch", type: "quantitative", title: "epoch", axis: epochTicks(points.map((p) => p.epoch)) },
        y: { field: "knn", type: "quantitative", title: "kNN top-1", axis: { format: ".1%" }, scale: { zero: false } },
        color: { field: "row", type: "nominal", title: "run", sort: null, legend: { orient: "bottom", columns: 3 } },
      },
    },
  };
}

export interface BarPoint {
  row: string;
  group: string;
  mean: number;
  lo: number;
  hi: number;
  kind: string;
}

/** Horizontal bars (mean) with error bars (± std over seeds), one panel per group. */
function barsWithErrors(
  name: string,
  title: string,
  caption: string,
  points: BarPoint[],
  axis: { title: string; format?: string },
): Chart {
  const rows = [...new Set(points.map((p) => p.row))];
  const x = { field: "mean", type: "quantitative" as const, title: axis.title, axis: { format: axis.format } };
  const y = { field: "row", type: "nominal" as const, title: null, sort: rows, axis: { labelLimit: 260 } };
  const layer = [
    {
      mark: { type: "bar" as const, height: { band: 0.7 } },
      encoding: {
        x,
        y,
        color: {
          field: "kind",
          type: "nominal" as const,
          title: null,
          scale: { domain: ["method", "baseline"], range: ["#4c78a8", "#bab0ac"] },
        },
      },
    },
    {
      mark: { type: "rule" as const, color: "#333" },
      encoding: { x: { field: "lo", type: "quantitative" as const }, x2: { field: "hi" }, y },
    },
  ];
  const height = Math.max(60, rows.length * 20);
  const groups = [...new Set(points.map((p) => p.group))];
  const spec: TopLevelSpec =
    groups.length > 1
      ? {
          ...base(title),
          data: { values: points },
          facet: { column: { field: "group", type: "nominal", title: null, sort: groups } },
          spec: { width: 240, height, layer },
          resolve: { scale: { x: "independent" } },
        }
      : { ...base(title), data: { values: points }, width: 480, height, layer };
  return { name, title, caption, spec };
}

export function readoutChart(points: BarPoint[]): Chart {
  return barsWithErrors(
    "readout",
    "Readout accuracy",
    "Linear readout and kNN top-1 on the test split of the frozen encoder (mean; the black bars span ± one standard deviation over seeds). Grey: baselines.",
    points,
    { title: "top-1", format: ".0%" },
  );
}

export function finetuneChart(points: BarPoint[]): Chart {
  return barsWithErrors(
    "finetune",
    "Fine-tuning accuracy",
    "Top-1 on the test split after fine-tuning the whole encoder with a fresh linear head on a fraction of the labels (mean; the black bars span ± one standard deviation over seeds). Grey: from random initialisation.",
    points,
    { title: "top-1", format: ".0%" },
  );
}

export interface StagePoint {
  row: string;
  stage: number;
  metric: string;
  top1: number;
}

/** Readout of each stage's pooled features, one line per row. */
export function perStageChart(points: StagePoint[]): Chart {
  return {
    name: "per-stage",
    title: "Per-stage readout",
    caption: "Linear readout and kNN top-1 of each encoder stage's globally pooled features (mean over seeds).",
    spec: {
      ...base("Readout per encoder stage"),
      data: { values: points },
      facet: { column: { field: "metric", type: "nominal", title: null, sort: ["linear", "kNN"] } },
      spec: {
        width: 240,
        height: 220,
        mark: { type: "line", point: true, strokeWidth: 1.5 },
        encoding: {
          x: { field: "stage", type: "ordinal", title: "stage", axis: { labelAngle: 0 } },
          y: { field: "top1", type: "quantitative", title: "top-1", axis: { format: ".1%" }, scale: { zero: false } },
          color: { field: "row", type: "nominal", title: "run", sort: null, legend: { orient: "bottom", columns: 3 } },
        },
      },
    },
  };
}

export function memoryChart(points: BarPoint[]): Chart {
  return barsWithErrors(
    "memory",
    "Peak training memory",
    "Peak bytes libtorch held during one training step (forward and backward, weights and gradients included), measured with the engine's counting allocator at the run's batch size.",
    points,
    { title: "MiB" },
  );
}

export function timeChart(points: BarPoint[]): Chart {
  return barsWithErrors(
    "time",
    "Training time",
    "Training seconds per optimizer step and images per second (mean ± std over seeds; data loading included, readout excluded).",
    points,
    { title: "" },
  );
}
