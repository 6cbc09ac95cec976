// A run on disk: its config.json (written when the run starts, read back on resume, by `loco eval`
// and by `--config`), and the encoder of its newest good checkpoint (or of a given checkpoint file).
import * as fs from "node:fs";
import * as path from "node:path";
import type { Tensor } from "../torch";
import { useFeedbackAlignment } from "../nn/layers";
import { type Checkpoint, checkpointDir, loadCheckpoint, loadLatestCheckpoint } from "./checkpoint";
import { type RunEncoder, buildRunEncoder } from "./encoders";
import { TrainingError } from "./errors";
import {
  NON_FINITE_ACTIONS,
  checkResolvedOptions,
  type TrainInput,
  type TrainOptions,
  completeTrainInput,
  resolveTrainOptions,
} from "./options";

export interface LoadedRun {
  runDir: string;
  options: TrainOptions;
  encoder: RunEncoder;
  checkpoint: string;
  /** Optimizer steps the checkpoint had done. */
  step: number;
}

/**
 * config.json of a run: every input field with its value (what `--config` reads back to reproduce
 * the run, the run directory aside), and the resolved options (what resume and `loco eval` use).
 */
export function runConfigJson(input: TrainInput, options: TrainOptions): Record<string, unknown> {
  const { runDir: _runDir, resume: _resume, encoderFactory: _factory, ...given } = completeTrainInput(input);
  return {
    ...given,
    dataDir: options.pretrainData.dir,
    threads: options.threads,
    baselines: options.baselines.length === 0 ? "none" : options.baselines.join(","),
    resolved: options,
  };
}

const invalid = (field: string, expected: string): TrainingError =>
  new TrainingError(`${field}: expected ${expected}`, 2);

/** Reads DIR/config.json as written by `loco train` (its resolved options). */
export function readRunConfig(runDir: string): TrainOptions {
  return readRunConfigFile(runDir).resolved;
}

/**
 * DIR/config.json, checked: the fields the user gave (as --config checks them) and the resolved
 * options (field by field); a usage error naming the file and the field otherwise.
 */
export function readRunConfigFile(runDir: string): { given: Record<string, unknown>; resolved: TrainOptions } {
  const file = path.join(runDir, "config.json");
  if (!fs.existsSync(file)) throw new TrainingError(`${runDir}: not a loco run directory (no config.json)`, 2);
  let saved: unknown;
  try {
    saved = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (error) {
    throw new TrainingError(`${file}: not a valid run config (${(error as Error).message})`, 2);
  }
  try {
    if (saved === null || typeof saved !== "object" || Array.isArray(saved)) throw invalid("the file", "a JSON object");
    const { resolved, runDir: _runDir, resume: _resume, ...given } = saved as Record<string, unknown>;
    if (resolved === undefined) throw invalid("resolved", "the run's resolved options (the field is missing)");
    // The fields a user gave, checked as --config checks them; then the resolved options the run uses.
    resolveTrainOptions(given as TrainInput);
    return { given, resolved: checkResolvedOptions(resolved) };
  } catch (error) {
    if (!(error instanceof TrainingError)) throw error;
    throw new TrainingError(`${file}: not a valid run config: ${error.message}`, 2);
  }
}

/**
 * Fields that may change when a run continues, applied with a warning: the schedule's length and
 * peak (epochs, lr, warmupEpochs), and what only monitors, reads out or keeps files. Every other
 * field defines the run: giving it on resume with another value is refused.
 */
export const RESUME_ADJUSTABLE = [
  "epochs",
  "lr",
  "warmupEpochs",
  "workers",
  "dataDir",
  "knnEvery",
  "knnTrainSize",
  "knnTestSize",
  "readout",
  "readoutEpochs",
  "readoutTrainSize",
  "readoutTestSize",
  "baselines",
  "supervisedEpochs",
  "perStage",
  "checkpointEvery",
  "keepCheckpoints",
] as const satisfies readonly (keyof TrainInput)[];
/** Fields of a resume's input that are not settings of the run itself. */
const RESUME_OWN = new Set(["resume", "runDir", "threads", "onNonfinite", "encoderFactory"]);

const canonicalJson = (v: unknown): string =>
  JSON.stringify(Array.isArray(v) && v.length === 1 ? v[0] : v) ?? "undefined";

/**
 * The options of `resume: DIR`: the run's own, with the threads, the non-finite action and the
 * encoder factory of `input` where given. Other fields of `input` that differ from the run's
 * config.json are applied with a warning when they may change (RESUME_ADJUSTABLE), refused with a
 * usage error naming them otherwise.
 */
export function resumeOptions(input: TrainInput, log: (m: string) => void = () => {}): TrainOptions {
  const dir = input.resume!;
  const file = path.join(dir, "config.json");
  if (!fs.existsSync(file)) {
    throw new TrainingError(`--resume: ${file} does not exist (not a loco run directory)`, 2);
  }
  const { given, resolved } = readRunConfigFile(dir);
  const options: TrainOptions = { ...resolved, runDir: dir, resume: true };
  if (input.runDir !== undefined && path.resolve(input.runDir) !== path.resolve(dir)) {
    throw new TrainingError(
      `runDir: a resumed run stays in its directory ${dir}, got ${JSON.stringify(input.runDir)}`,
      2,
    );
  }
  const entries = Object.entries(input).filter(([k, v]) => v !== undefined && !RESUME_OWN.has(k));
  const differs = ([k, v]: [string, unknown]): boolean => canonicalJson(v) !== canonicalJson(given[k]);
  const refused = entries.filter((e) => differs(e) && !(RESUME_ADJUSTABLE as readonly string[]).includes(e[0]));
  if (refused.length > 0) {
    throw new TrainingError(
      `--resume ${dir}: ${refused.map(([k]) => k).join(", ")} differ from the run's: it was started with ` +
        `${refused.map(([k, v]) => `${k} ${canonicalJson(given[k])} (given: ${canonicalJson(v)})`).join(", ")}; ` +
        `these settings define the run and cannot change on resume: drop them, or start a new run with another --run-dir`,
      2,
    );
  }
  const adjusted = entries.filter(differs);
  if (adjusted.length > 0) {
    // Resolved as a whole, so that each value is checked as on a fresh start.
    const merged = resolveTrainOptions({ ...(given as TrainInput), ...Object.fromEntries(adjusted) });
    for (const [key] of adjusted) {
      if (key === "dataDir") {
        for (const split of ["pretrainData", "trainData", "testData"] as const)
          options[split] = { ...options[split], dir: merged.pretrainData.dir };
      } else {
        (options as unknown as Record<string, unknown>)[key] = merged[key as keyof TrainOptions];
      }
      // The schedule's fields are reported against the checkpoint's when it is restored.
      if (key === "epochs" || key === "lr" || key === "warmupEpochs") continue;
      log(
        `warning: --resume: ${key} changes from ${canonicalJson(given[key])} to ${canonicalJson(Object.fromEntries(adjusted)[key])}`,
      );
    }
  }
  if (input.threads !== undefined) options.threads = resolveTrainOptions({ threads: input.threads }).threads;
  if (input.onNonfinite !== undefined) {
    if (!NON_FINITE_ACTIONS.includes(input.onNonfinite)) {
      throw new TrainingError(
        `onNonfinite: expected one of ${NON_FINITE_ACTIONS.join(", ")}, got ${JSON.stringify(input.onNonfinite)}`,
        2,
      );
    }
    options.onNonfinite = input.onNonfinite;
  }
  if (input.encoderFactory !== undefined) options.encoderFactory = input.encoderFactory;
  return options;
}

/** Checkpoints renamed *.corrupt after failing their checks. */
function listCorruptCheckpoints(runDir: string): string[] {
  const dir = checkpointDir(runDir);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((n) => n.endsWith(".corrupt"))
    .sort()
    .map((n) => path.join(dir, n));
}

function isCheckpointFile(target: string): boolean {
  return fs.existsSync(target) && fs.statSync(target).isFile();
}

/** The run directory of a run directory or of a checkpoint file (RUN/checkpoints/step-N.safetensors). */
export function runDirOf(target: string): string {
  if (!fs.existsSync(target)) throw new TrainingError(`${target}: no such run directory or checkpoint file`, 2);
  return isCheckpointFile(target) ? path.dirname(path.dirname(target)) : target;
}

/**
 * Opens a run: `target` is a run directory (newest good checkpoint) or a checkpoint file inside
 * one (its run directory is two levels up). The encoder's weights come from the checkpoint.
 */
export function openRun(
  target: string,
  inChannels: number,
  warn?: (m: string) => void,
  overrides: Pick<TrainInput, "encoderFactory"> = {},
): LoadedRun {
  const isFile = isCheckpointFile(target);
  const runDir = runDirOf(target);
  const options = { ...readRunConfig(runDir), ...overrides };
  const checkpoint: Checkpoint | null = isFile ? loadCheckpoint(target) : loadLatestCheckpoint(runDir, warn);
  if (checkpoint === null) {
    const corrupt = listCorruptCheckpoints(runDir);
    throw new TrainingError(
      corrupt.length === 0
        ? `${runDir}: the run has no checkpoint yet`
        : `${runDir}: no good checkpoint: every checkpoint failed its checks and was set aside (${corrupt.join(", ")})`,
    );
  }
  const encoder = buildRunEncoder(options, inChannels);
  // A feedback-alignment run's checkpoint holds the feedback matrices (buffers) too.
  if (options.learning.feedback === "alignment") useFeedbackAlignment(encoder);
  const state = new Map<string, Tensor>();
  for (const [k, v] of checkpoint.model) if (k.startsWith("encoder.")) state.set(k.slice("encoder.".length), v);
  try {
    encoder.loadStateDict(state);
  } catch (error) {
    encoder.dispose();
    throw error;
  } finally {
    for (const t of [...checkpoint.model.values(), ...checkpoint.optimizer.values()]) t.release();
  }
  return { runDir, options, encoder, checkpoint: checkpoint.path, step: checkpoint.meta.step };
}
