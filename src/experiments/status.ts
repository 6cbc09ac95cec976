// Where a grid stands (`loco experiment --list`): every row × seed as done, partial or pending, and
// the time left estimated from the wall times of the runs that finished; and the slice of a grid one
// invocation may run (--max-runs, --max-minutes), which stops it cleanly between runs.
import * as fs from "node:fs";
import * as path from "node:path";
import { finetuneResultFile } from "../learning/finetune";
import { isRunDir, readRun } from "../report/rundata";
import { type ExperimentSpec, GridError, slug } from "./grid";
import type { Selection } from "./selection";

/** A grid cell as experiment.json records it (runs and fine-tunings). */
export interface SavedCell {
  row: string;
  seed: number;
  /** Relative to the experiment directory. */
  dir: string;
  wallSeconds?: number;
  status?: "finished" | "failed" | "interrupted" | "pending";
}

/** The run directory of a row's seed, relative to the experiment directory. */
export const cellDir = (row: string, seed: number): string => path.join("runs", slug(row), `seed-${seed}`);

const mean = (xs: number[]): number | null => (xs.length === 0 ? null : xs.reduce((a, b) => a + b, 0) / xs.length);

/** Expected wall seconds of a run and of a fine-tuning, from those that finished in this directory. */
export class Estimator {
  private readonly byRow = new Map<string, number[]>();
  private readonly all: number[] = [];
  private readonly perFraction: number[] = [];

  constructor(runs: SavedCell[], finetunes: SavedCell[], fractions: number) {
    for (const c of runs) {
      if (c.status !== "finished" || c.wallSeconds === undefined) continue;
      this.byRow.set(c.row, [...(this.byRow.get(c.row) ?? []), c.wallSeconds]);
      this.all.push(c.wallSeconds);
    }
    for (const c of finetunes) {
      if (c.status === "finished" && c.wallSeconds !== undefined) this.perFraction.push(c.wallSeconds / fractions);
    }
  }

  /** Finished runs and fine-tunings the estimates rest on. */
  get basis(): { runs: number; finetunes: number } {
    return { runs: this.all.length, finetunes: this.perFraction.length };
  }

  /** A run of the row: the mean of the row's finished runs, else of all finished runs, else null. */
  runSeconds(row: string): number | null {
    return mean(this.byRow.get(row) ?? []) ?? mean(this.all);
  }

  /** Fine-tuning on `fractions` label fractions (summed over encoders), or null before any finished. */
  finetuneSeconds(fractions: number): number | null {
    const m = mean(this.perFraction);
    return m === null ? null : m * fractions;
  }
}

export type CellStatus = "done" | "partial" | "pending" | "failed";

export interface CellState {
  /** 1-based position of the row in the grid (what --rows takes). */
  rowId: number;
  row: string;
  seed: number;
  dir: string;
  selected: boolean;
  /** done: the run and its fine-tunings finished; partial: some of it; failed: its last try failed. */
  status: CellStatus;
  runFinished: boolean;
  /** Epochs trained so far, of `epochs` (a started run). */
  epochsDone: number;
  epochs: number | null;
  finetuneDone: number;
  finetuneTotal: number;
}

export interface GridStatus {
  cells: CellState[];
  /** Counts over the selected cells. */
  counts: Record<CellStatus, number>;
  finetune: { done: number; total: number };
  /** Run time left for the selection (one job), split into pretraining runs and fine-tunings; null: nothing to estimate from. */
  runSecondsLeft: number | null;
  finetuneSecondsLeft: number | null;
  basis: { runs: number; finetunes: number };
  /** --jobs of the invocations whose wall times are recorded. */
  measuredJobs: number | null;
}

/** experiment.json of a directory, or null. */
export function readExperimentInfo(dir: string): Record<string, unknown> | null {
  const file = path.join(dir, "experiment.json");
  if (!fs.existsSync(file)) return null;
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
  } catch (error) {
    throw new GridError(`${file}: not valid JSON (${(error as Error).message}); remove it to start the grid over`);
  }
}

function cellState(spec: ExperimentSpec, dir: string, rowIndex: number, seed: number, saved: SavedCell[]): CellState {
  const row = spec.rows[rowIndex].name;
  const rel = cellDir(row, seed);
  const runDir = path.join(dir, rel);
  const runFinished = fs.existsSync(path.join(runDir, "results.json"));
  let epochsDone = 0;
  let epochs: number | null = null;
  if (!runFinished && isRunDir(runDir)) {
    try {
      const run = readRun(runDir);
      epochsDone = run.epochs.at(-1)?.epoch ?? 0;
      epochs = run.config?.epochs ?? null;
    } catch {
      // An unreadable metrics file: the run is partial, its progress unknown.
    }
  }
  const fractions = spec.finetune?.fractions ?? [];
  const inits = rowIndex === 0 ? [false, true] : [false];
  const finetuneTotal = fractions.length * inits.length;
  const finetuneDone = inits
    .flatMap((random) => fractions.map((f) => fs.existsSync(finetuneResultFile(runDir, f, random))))
    .filter(Boolean).length;
  const failed = saved.find((c) => c.dir === rel)?.status === "failed";
  const started = runFinished || fs.existsSync(path.join(runDir, "config.json")) || finetuneDone > 0;
  const status: CellStatus =
    runFinished && finetuneDone === finetuneTotal ? "done" : failed ? "failed" : started ? "partial" : "pending";
  return {
    rowId: rowIndex + 1,
    row,
    seed,
    dir: rel,
    selected: false,
    status,
    runFinished,
    epochsDone,
    epochs,
    finetuneDone,
    finetuneTotal,
  };
}

/** The state of every row × seed of a grid in `dir`, and the time left for the selection. */
export function gridStatus(spec: ExperimentSpec, dir: string, selection: Selection): GridStatus {
  const info = readExperimentInfo(dir);
  const savedRuns = (info?.runs as SavedCell[] | undefined) ?? [];
  const savedFinetunes = (info?.finetune as SavedCell[] | undefined) ?? [];
  const fractions = spec.finetune?.fractions.length ?? 0;
  const estimator = new Estimator(savedRuns, savedFinetunes, Math.max(1, fractions));
  const cells = spec.rows.flatMap((row, i) =>
    spec.seeds.map((seed) => ({
      ...cellState(spec, dir, i, seed, savedRuns),
      selected: selection.rows.includes(row) && selection.seeds.includes(seed),
    })),
  );
  const counts: Record<CellStatus, number> = { done: 0, partial: 0, pending: 0, failed: 0 };
  let runLeft: number | null = 0;
  let finetuneLeft: number | null = 0;
  const finetune = { done: 0, total: 0 };
  for (const c of cells.filter((x) => x.selected)) {
    counts[c.status]++;
    finetune.done += c.finetuneDone;
    finetune.total += c.finetuneTotal;
    if (!c.runFinished) {
      const whole = estimator.runSeconds(c.row);
      const left = c.epochs !== null && c.epochs > 0 ? 1 - c.epochsDone / c.epochs : 1;
      runLeft = whole === null || runLeft === null ? null : runLeft + whole * left;
    }
    const missing = c.finetuneTotal - c.finetuneDone;
    if (missing > 0) {
      const seconds = estimator.finetuneSeconds(missing);
      finetuneLeft = seconds === null || finetuneLeft === null ? null : finetuneLeft + seconds;
    }
  }
  return {
    cells,
    counts,
    finetune,
    runSecondsLeft: runLeft,
    finetuneSecondsLeft: finetuneLeft,
    basis: estimator.basis,
    measuredJobs: typeof info?.jobs === "number" ? info.jobs : null,
  };
}

/** Limits on what one invocation starts: a number of runs, or minutes of wall time. */
export interface SliceLimits {
  maxRuns?: number;
  maxMinutes?: number;
}

/**
 * The slice of a grid one invocation runs. Before each run (a pretraining run or one encoder's
 * fine-tuning) the runner asks admit(): with --max-runs N at most N start; with --max-minutes M a
 * run starts only if, by its estimated wall time (the finished runs' mean; none known: 0), it ends
 * within M minutes of the start. Once one is refused, no later one starts: the running ones finish
 * and the invocation ends cleanly between runs.
 */
export class Slice {
  started = 0;
  /** Why the slice stopped starting runs (null while it admits). */
  stopReason: string | null = null;
  private readonly start: number;

  constructor(
    private readonly limits: SliceLimits,
    private readonly now: () => number = Date.now,
  ) {
    this.start = now();
  }

  admit(what: string, estimateSeconds: number | null): boolean {
    if (this.stopReason !== null) return false;
    const { maxRuns, maxMinutes } = this.limits;
    if (maxRuns !== undefined && this.started >= maxRuns) {
      this.stopReason = `--max-runs ${maxRuns}: ${this.started} run${this.started === 1 ? "" : "s"} started`;
      return false;
    }
    if (maxMinutes !== undefined) {
      const elapsed = (this.now() - this.start) / 1000;
      const expected = estimateSeconds ?? 0;
      if (elapsed + expected > maxMinutes * 60) {
        this.stopReason =
          `--max-minutes ${maxMinutes}: ${what} would end after ${formatDuration(elapsed + expected)} ` +
          `(${formatDuration(elapsed)} elapsed, about ${formatDuration(expected)} by the finished runs' wall times)`;
        return false;
      }
    }
    this.started++;
    return true;
  }
}

/** 7260 → "2 h 1 min"; 300 → "5 min"; 42 → "42 s". */
export function formatDuration(seconds: number): string {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}
