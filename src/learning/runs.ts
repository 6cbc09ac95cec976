// Reading a finished (or interrupted) run back: its resolved config and the encoder of its newest
// good checkpoint (or a given checkpoint file).
import * as fs from "node:fs";
import * as path from "node:path";
import { Generator } from "../torch/random";
import { ResNet } from "../models/resnet";
import { useFeedbackAlignment } from "../nn/layers";
import type { Tensor } from "../torch";
import type { TrainOptions } from "./trainer";
import { type Checkpoint, loadCheckpoint, loadLatestCheckpoint } from "./checkpoint";

export interface LoadedRun {
  runDir: string;
  options: TrainOptions;
  encoder: ResNet;
  checkpoint: string;
  /** Optimizer steps the checkpoint had done. */
  step: number;
}

/** The encoder a run trains (same architecture and init seed). */
export function buildRunEncoder(options: TrainOptions, inChannels: number): ResNet {
  return new ResNet({
    depth: options.encoder.depth,
    width: options.encoder.width,
    stem: options.encoder.stem,
    inChannels,
    numClasses: 0,
    channelsLast: options.channelsLast,
    generator: new Generator(options.seed),
  });
}

/** Reads DIR/config.json as written by `loco train`. */
export function readRunConfig(runDir: string): TrainOptions {
  const file = path.join(runDir, "config.json");
  if (!fs.existsSync(file)) throw new Error(`${runDir}: not a loco run directory (no config.json)`);
  try {
    const saved = JSON.parse(fs.readFileSync(file, "utf8")) as { resolved?: TrainOptions };
    if (saved.resolved === undefined || typeof saved.resolved !== "object") throw new Error("no 'resolved' field");
    return saved.resolved;
  } catch (error) {
    throw new Error(`${file}: not a valid run config (${(error as Error).message})`);
  }
}

function isCheckpointFile(target: string): boolean {
  return fs.existsSync(target) && fs.statSync(target).isFile();
}

/** The run directory of a run directory or of a checkpoint file (RUN/checkpoints/step-N.safetensors). */
export function runDirOf(target: string): string {
  if (!fs.existsSync(target)) throw new Error(`${target}: no such run directory or checkpoint file`);
  return isCheckpointFile(target) ? path.dirname(path.dirname(target)) : target;
}

/**
 * Opens a run: `target` is a run directory (newest good checkpoint) or a checkpoint file inside
 * one (its run directory is two levels up). The encoder's weights come from the checkpoint.
 */
export function openRun(target: string, inChannels: number, warn?: (m: string) => void): LoadedRun {
  const isFile = isCheckpointFile(target);
  const runDir = runDirOf(target);
  const options = readRunConfig(runDir);
  const checkpoint: Checkpoint | null = isFile ? loadCheckpoint(target) : loadLatestCheckpoint(runDir, warn);
  if (checkpoint === null) throw new Error(`${runDir}: the run has no checkpoint yet`);
  const encoder = buildRunEncoder(options, inChannels);
  // A feedback-alignment run's checkpoint holds the feedback matrices (buffers) too.
  if (options.learning.feedback === "alignment") useFeedbackAlignment(encoder);
  const state = new Map<string, Tensor>();
  for (const [k, v] of checkpoint.model) if (k.startsWith("encoder.")) state.set(k.slice("encoder.".length), v);
  try {
    encoder.loadStateDict(state);
  } finally {
    for (const t of [...checkpoint.model.values(), ...checkpoint.optimizer.values()]) t.release();
  }
  return { runDir, options, encoder, checkpoint: checkpoint.path, step: checkpoint.meta.step };
}
