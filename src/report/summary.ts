// Aggregates of runs by grid row: mean and standard deviation over seeds of the readouts, peak
// memory and timing; the baselines a run read out become rows of their own.
import type { RunData, RunFinetune } from "./rundata";

/** Mean and sample standard deviation (0 for a single value) of n values. */
export interface Stat {
  mean: number;
  std: number;
  n: number;
}

export function stat(values: (number | null | undefined)[]): Stat | null {
  const xs = values.filter((v): v is number => typeof v === "number" && Number.isFinite(v));
  if (xs.length === 0) return null;
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const variance = xs.length > 1 ? xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1) : 0;
  return { mean, std: Math.sqrt(variance), n: xs.length };
}

export interface RowSummary {
  row: string;
  kind: "method" | "baseline";
  /** Runs of this row, and how many have results. */
  runs: number;
  finished: number;
  linear: Stat | null;
  knn: Stat | null;
  perStage: { stage: number; linear: Stat | null; knn: Stat | null }[];
  peakBytes: Stat | null;
  activationPeakBytes: Stat | null;
  /** Training seconds per optimizer step, images per second, training seconds, wall seconds per run. */
  stepSeconds: Stat | null;
  imagesPerSecond: Stat | null;
  trainSeconds: Stat | null;
  wallSeconds: Stat | null;
  /** Fine-tuning top-1 per label fraction (the random-init row: from random initialisation). */
  finetune: { fraction: number; top1: Stat | null }[];
}

export const BASELINE_ROWS: Record<string, string> = {
  randomInit: "random init",
  supervised: "supervised",
  rawPixels: "raw pixels",
};

export interface RowInput {
  row: string;
  run: RunData | null;
  seed: number;
  wallSeconds?: number;
}

/** A baseline row: no training figures of its own (no stages, memory or times), readouts to fill. */
export function baselineRow(label: string, runs: number, finished: number): RowSummary {
  return {
    row: label,
    kind: "baseline",
    runs,
    finished,
    linear: null,
    knn: null,
    perStage: [],
    peakBytes: null,
    activationPeakBytes: null,
    stepSeconds: null,
    imagesPerSecond: null,
    trainSeconds: null,
    wallSeconds: null,
    finetune: [],
  };
}

/** One summary per row (grid order), then one per baseline found (each seed counted once). */
export function summarizeRows(inputs: RowInput[]): RowSummary[] {
  const rows = [...new Set(inputs.map((i) => i.row))];
  const out: RowSummary[] = rows.map((row) => {
    const cells = inputs.filter((i) => i.row === row);
    const done = cells.filter((c) => c.run?.results != null);
    const res = done.map((c) => c.run!.results!);
    const stages = [...new Set(res.flatMap((r) => (r.perStage ?? []).map((s) => s.stage)))].sort((a, b) => a - b);
    const mem = cells.map((c) => c.run?.memory ?? null);
    return {
      row,
      kind: "method",
      runs: cells.length,
      finished: done.length,
      linear: stat(res.map((r) => r.linear?.top1)),
      knn: stat(res.map((r) => r.knn?.top1)),
      perStage: stages.map((stage) => ({
        stage,
        linear: stat(res.map((r) => r.perStage?.find((s) => s.stage === stage)?.linear.top1)),
        knn: stat(res.map((r) => r.perStage?.find((s) => s.stage === stage)?.knn.top1)),
      })),
      peakBytes: stat(mem.map((m) => m?.peakBytes)),
      activationPeakBytes: stat(mem.map((m) => m?.activationPeakBytes)),
      stepSeconds: stat(res.map((r) => (r.training.steps > 0 ? r.training.seconds / r.training.steps : null))),
      imagesPerSecond: stat(res.map((r) => r.training.imagesPerSecond)),
      trainSeconds: stat(res.map((r) => r.training.seconds)),
      wallSeconds: stat(done.map((c) => c.wallSeconds)),
      finetune: finetuneStats(cells.map((c) => c.run?.finetune.filter((f) => f.init === "pretrained") ?? [])),
    };
  });
  for (const [key, label] of Object.entries(BASELINE_ROWS)) {
    const bySeed = new Map<number, { linear: number; knn: number }>();
    for (const i of inputs) {
      const b = i.run?.results?.baselines?.[key as keyof NonNullable<NonNullable<RunData["results"]>["baselines"]>];
      if (b !== undefined && !bySeed.has(i.seed)) bySeed.set(i.seed, { linear: b.linear.top1 ?? NaN, knn: b.knn.top1 });
    }
    // Fine-tuning from random init is the random-init baseline's protocol too (one set per seed).
    const finetuneBySeed = new Map<number, RunFinetune[]>();
    if (key === "randomInit") {
      for (const i of inputs) {
        const random = i.run?.finetune.filter((f) => f.init === "random") ?? [];
        if (random.length > 0 && !finetuneBySeed.has(i.seed)) finetuneBySeed.set(i.seed, random);
      }
    }
    if (bySeed.size === 0 && finetuneBySeed.size === 0) continue;
    const values = [...bySeed.values()];
    const runs = Math.max(values.length, finetuneBySeed.size);
    out.push({
      ...baselineRow(label, runs, runs),
      linear: stat(values.map((v) => v.linear)),
      knn: stat(values.map((v) => v.knn)),
      finetune: finetuneStats([...finetuneBySeed.values()]),
    });
  }
  return out;
}

/** Mean ± std over runs of the fine-tuning top-1 at each fraction any run has. */
function finetuneStats(perRun: RunFinetune[][]): { fraction: number; top1: Stat | null }[] {
  const fractions = [...new Set(perRun.flat().map((f) => f.fraction))].sort((a, b) => a - b);
  return fractions.map((fraction) => ({
    fraction,
    top1: stat(perRun.map((fs) => fs.find((f) => f.fraction === fraction)?.top1)),
  }));
}

/** "78.70 ± 0.42" (percent; no ± for a single seed), or "-". */
export function formatPercent(s: Stat | null): string {
  if (s === null) return "-";
  return s.n > 1 ? `${(s.mean * 100).toFixed(2)} ± ${(s.std * 100).toFixed(2)}` : (s.mean * 100).toFixed(2);
}
