// A run on disk: its config.json (written when the run starts, read back on resume, by `loco eval`
// and by `--config`), and the encoder of its newest good checkpoint (or of a given checkpoint file).
import * as fs from "node:fs";
import * as path from "node:path";
import type { Tensor } from "../torch";
import { type Checkpoint, loadCheckpoint, loadLatestCheckpoint } from "./checkpoint";
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
    return checkResolvedOptions(resolved);
  } catch (error) {
    if (!(error instanceof TrainingError)) throw error;
    throw new TrainingError(`${file}: not a valid run config: ${error.message}`, 2);
  }
}

/**
 * The options of `resume: DIR`: the run's own, with the threads, the non-finite action and the
 * encoder factory of `input` where given.
 */
export function resumeOptions(input: TrainInput): TrainOptions {
  const dir = input.resume!;
  const file = path.join(dir, "config.json");
  if (!fs.existsSync(file)) {
    throw new TrainingError(`--resume: ${file} does not exist (not a loco run directory)`, 2);
  }
  const options: TrainOptions = { ...readRunConfig(dir), runDir: dir, resume: true };
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
  if (checkpoint === null) throw new TrainingError(`${runDir}: the run has no checkpoint yet`);
  const encoder = buildRunEncoder(options, inChannels);
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
