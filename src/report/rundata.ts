// Reading what `loco train` and `loco experiment` leave on disk, typed, for the report and the
// experiment tables: a run directory (config.json, metrics.jsonl, results.json, memory.json) and
// an experiment directory (experiment.json and one run directory per grid cell under runs/).
// Metrics are read through learning/metrics.ts (typed, checked records); nothing here trains.
import * as fs from "node:fs";
import * as path from "node:path";
import type { TrainOptions } from "../learning/options";
import type { Results } from "../learning/results";
import { type EpochRecord, type MetricsRecord, type StepRecord, readMetrics } from "../learning/metrics";

/** A `step` record of metrics.jsonl (written every 10 steps and at epoch ends). */
export interface StepRow {
  step: number;
  epoch: number;
  lr: number;
  /** One loss per loss stage (in stage order); null where the stage did not train (NaN). */
  loss: (number | null)[];
  imagesPerSecond: number;
  dataWaitShare: number;
}

/** An `epoch` record: mean loss per loss stage over the epoch and the kNN monitor. */
export interface EpochRow {
  epoch: number;
  step: number;
  loss: (number | null)[];
  knnTop1: number | null;
  trainSeconds: number;
}

/** Peak training-step memory of the run's configuration (memory.json, written by `loco experiment`). */
export interface RunMemory {
  peakBytes: number;
  activationPeakBytes: number;
  stepSeconds?: number;
}

/** A `loco finetune` result beside the run (RUN/finetune-<percent>pct[-random-init].json). */
export interface RunFinetune {
  fraction: number;
  init: "pretrained" | "random";
  top1: number;
  epochs: number;
  seconds: number;
}

export interface RunData {
  dir: string;
  /** Resolved options from config.json (null if the file is missing or unreadable). */
  config: TrainOptions | null;
  /** 1-based stages of the losses, in the order of the metrics' loss arrays. */
  lossStages: number[];
  /** Step and epoch records; a step written again after a resume replaces the earlier one. */
  steps: StepRow[];
  epochs: EpochRow[];
  /** results.json, or null while the run is unfinished. */
  results: Results | null;
  memory: RunMemory | null;
  /** Fine-tuning results found in the directory, by fraction. */
  finetune: RunFinetune[];
}

/** A user-facing problem with a run or experiment directory. */
export class ReportInputError extends Error {
  override name = "ReportInputError";
  readonly userFacing = true;
  readonly exitCode = 2;
}

function readJson<T>(file: string): T | null {
  if (!fs.existsSync(file)) return null;
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as T;
  } catch (error) {
    throw new ReportInputError(`${file}: not valid JSON (${(error as Error).message})`);
  }
}

const finite = (v: number | null): number | null => (v !== null && Number.isFinite(v) ? v : null);

/** The checked records of a metrics.jsonl file (none if it does not exist yet). */
export function readMetricsFile(file: string): MetricsRecord[] {
  if (!fs.existsSync(file)) return [];
  try {
    return readMetrics(file);
  } catch (error) {
    throw new ReportInputError((error as Error).message);
  }
}

/** Keeps the last record per key, in key order. */
function lastByKey<T>(rows: T[], key: (r: T) => number): T[] {
  const map = new Map<number, T>();
  for (const r of rows) map.set(key(r), r);
  return [...map.entries()].sort((a, b) => a[0] - b[0]).map(([, r]) => r);
}

export function isRunDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, "config.json")) || fs.existsSync(path.join(dir, "metrics.jsonl"));
}

export function isExperimentDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, "experiment.json"));
}

/** Reads a run directory (finished or not). */
export function readRun(dir: string): RunData {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new ReportInputError(`${dir}: no such directory`);
  if (!isRunDir(dir)) throw new ReportInputError(`${dir}: not a loco run directory (no config.json or metrics.jsonl)`);
  const saved = readJson<{ resolved?: TrainOptions }>(path.join(dir, "config.json"));
  const config = saved?.resolved ?? null;
  const records = readMetricsFile(path.join(dir, "metrics.jsonl"));
  const steps = lastByKey(
    records
      .filter((r): r is StepRecord => r.type === "step")
      .map((r): StepRow => ({
        step: r.step,
        epoch: r.epoch,
        lr: r.lr,
        loss: r.loss.map(finite),
        imagesPerSecond: r.imagesPerSecond,
        dataWaitShare: r.dataWaitShare,
      })),
    (r) => r.step,
  );
  const epochs = lastByKey(
    records
      .filter((r): r is EpochRecord => r.type === "epoch")
      .map((r): EpochRow => ({
        epoch: r.epoch,
        step: r.step,
        loss: r.loss.map(finite),
        knnTop1: finite(r.knnTop1),
        trainSeconds: r.trainSeconds,
      })),
    (r) => r.epoch,
  );
  const lossStages = config ? [...config.learning.lossStages].sort((a, b) => a - b) : [];
  const results = readJson<Results>(path.join(dir, "results.json"));
  const memory = readJson<RunMemory>(path.join(dir, "memory.json"));
  return { dir, config, lossStages, steps, epochs, results, memory, finetune: readFinetune(dir) };
}

function readFinetune(dir: string): RunFinetune[] {
  const files = fs.readdirSync(dir).filter((f) => /^finetune-[0-9.]+pct(-random-init)?\.json$/.test(f));
  const out: RunFinetune[] = [];
  for (const f of files.sort()) {
    const r = readJson<{
      fraction?: unknown;
      init?: unknown;
      top1?: unknown;
      settings?: { epochs?: unknown };
      seconds?: unknown;
    }>(path.join(dir, f));
    if (r === null || typeof r.fraction !== "number" || typeof r.top1 !== "number") continue;
    out.push({
      fraction: r.fraction,
      init: r.init === "random" ? "random" : "pretrained",
      top1: r.top1,
      epochs: typeof r.settings?.epochs === "number" ? r.settings.epochs : 0,
      seconds: typeof r.seconds === "number" ? r.seconds : 0,
    });
  }
  return out.sort((a, b) => a.fraction - b.fraction);
}

/** One cell of an experiment grid as listed in experiment.json. */
export interface ExperimentRunEntry {
  /** The grid row (e.g. "LoCo, 4-layer MLP"). */
  row: string;
  seed: number;
  /** Run directory relative to the experiment directory. */
  dir: string;
}

export interface ExperimentData {
  dir: string;
  name: string;
  /** Row labels in grid order. */
  rows: string[];
  runs: (ExperimentRunEntry & { data: RunData | null })[];
  /** The rest of experiment.json (protocol, preset, references). */
  info: Record<string, unknown>;
}

/** Reads an experiment directory; runs not started yet have data null. */
export function readExperiment(dir: string): ExperimentData {
  const info = readJson<Record<string, unknown>>(path.join(dir, "experiment.json"));
  if (info === null) throw new ReportInputError(`${dir}: not a loco experiment directory (no experiment.json)`);
  const entries = info.runs;
  if (!Array.isArray(entries)) throw new ReportInputError(`${path.join(dir, "experiment.json")}: no 'runs' list`);
  const runs = (entries as ExperimentRunEntry[]).map((e) => {
    const runDir = path.join(dir, e.dir);
    return { ...e, data: isRunDir(runDir) ? readRun(runDir) : null };
  });
  const rows = [...new Set(runs.map((r) => r.row))];
  return { dir, name: String(info.name ?? path.basename(dir)), rows, runs, info };
}
