// Reading out a run's checkpoint after training (`loco eval` and library users): the run's own
// readout settings unless overridden, the report written atomically beside the run.
import * as path from "node:path";
import type { BaselineName, ReadoutReport } from "./readout";
import { readoutReport } from "./readout";
import { openDataset } from "../data/datasets";
import { buildRunEncoder } from "./encoders";
import type { MethodName, LocalLearningConfig } from "./methods";
import { describeMethod } from "./options";
import { saveSafetensors } from "../torch";
import { extractFeatures, extractStageFeatures } from "../eval/features";
import { removeStaleTemporaries } from "./checkpoint";
import { encoderFeatures } from "./encoders";
import { TrainingError } from "./errors";
import { evalBatches, evalDataSpec } from "./readout";
import { naturalStages } from "./split";
import { checkOutputFile, writeJsonAtomic } from "./rundir";
import { openRun, readRunConfig, runDirOf } from "./runs";

export interface EvaluateRunOptions {
  /** Default: the run's. */
  readoutEpochs?: number;
  readoutWeightDecays?: number[];
  readoutTrainSize?: number;
  readoutTestSize?: number;
  baselines?: BaselineName[];
  perStage?: boolean;
  supervisedEpochs?: number;
  /** The report's file (default RUN/eval-step-N.json). */
  out?: string;
  /** Progress lines. */
  log?: (message: string) => void;
}

export interface RunEvaluation extends ReadoutReport {
  method: MethodName;
  methodSettings: string;
  learning: LocalLearningConfig;
  dataset: string;
  checkpoint: string;
  step: number;
}

/**
 * Reads out the newest good checkpoint of a run directory (or a given checkpoint file) and writes
 * the report. Returns it with the file it was written to.
 */
export async function evaluateRun(
  target: string,
  options: EvaluateRunOptions = {},
): Promise<{ evaluation: RunEvaluation; file: string }> {
  const log = options.log ?? ((): void => {});
  const runDir = runDirOf(target);
  const config = readRunConfig(runDir);
  if (options.out !== undefined) checkOutputFile(options.out, "--out");
  for (const file of removeStaleTemporaries(runDir)) log(`removed ${file}, left by a write that never finished`);
  const train = await openDataset(evalDataSpec(config.trainData));
  const test = await openDataset(evalDataSpec(config.testData));
  const run = openRun(target, train.channels, log);
  try {
    const o = run.options;
    log(`evaluating ${run.checkpoint} (step ${run.step}) …`);
    const report = (await readoutReport(run.encoder, train, test, {
      normalize: o.normalize,
      readoutEpochs: options.readoutEpochs ?? o.readoutEpochs,
      // Runs made before the option existed read out with one fixed weight decay of 0, as then.
      readoutWeightDecays: options.readoutWeightDecays ?? o.readoutWeightDecays ?? [0],
      readoutTrainSize: options.readoutTrainSize ?? o.readoutTrainSize,
      readoutTestSize: options.readoutTestSize ?? o.readoutTestSize ?? 0,
      baselines: options.baselines ?? [],
      perStage: options.perStage ?? false,
      supervisedEpochs: options.supervisedEpochs ?? o.supervisedEpochs,
      batchSize: o.batchSize,
      seed: o.seed,
      freshEncoder: () => buildRunEncoder(o, train.channels),
      log,
    }))!;
    const evaluation: RunEvaluation = {
      method: o.method,
      methodSettings: describeMethod(o.method, o.learning),
      learning: o.learning,
      dataset: o.trainData.name,
      checkpoint: run.checkpoint,
      step: run.step,
      ...report,
    };
    const file = options.out ?? path.join(run.runDir, `eval-step-${run.step}.json`);
    writeJsonAtomic(file, evaluation);
    return { evaluation, file };
  } finally {
    run.encoder.dispose();
  }
}

export interface EmbedRunOptions {
  split?: "train" | "test";
  /** 1-based stage whose pooled output is written (default 4, the encoder's output). */
  stage?: number;
  /** The safetensors file (default RUN/embeddings-<split>[-stage<k>].safetensors). */
  out?: string;
  log?: (message: string) => void;
}

/**
 * Writes a run's frozen features of a dataset split (and the labels) as a safetensors file. The
 * output path is checked before any work; a failed write names the file and leaves no temporary.
 */
export async function embedRun(
  target: string,
  options: EmbedRunOptions = {},
): Promise<{ file: string; count: number; dim: number; dataset: string; stage: number }> {
  const log = options.log ?? ((): void => {});
  const split = options.split ?? "test";
  const stage = options.stage ?? 4;
  const runDir = runDirOf(target);
  const config = readRunConfig(runDir);
  const file =
    options.out ?? path.join(runDir, `embeddings-${split}${stage === 4 ? "" : `-stage${stage}`}.safetensors`);
  checkOutputFile(file, "--out");
  for (const stale of removeStaleTemporaries(runDir)) log(`removed ${stale}, left by a write that never finished`);
  const dataset = await openDataset(evalDataSpec(split === "train" ? config.trainData : config.testData));
  const run = openRun(target, dataset.channels, log);
  try {
    const batches = (): ReturnType<typeof evalBatches> => evalBatches(dataset, 256, run.options.normalize);
    const set =
      stage === 4
        ? await extractFeatures(encoderFeatures(run.encoder), batches(), { module: run.encoder })
        : (await extractStageFeatures(naturalStages(run.encoder), batches(), [stage - 1], { module: run.encoder }))[0];
    try {
      saveSafetensors(
        file,
        { features: set.features, labels: set.labels },
        {
          checkpoint: run.checkpoint,
          step: String(run.step),
          dataset: dataset.name,
          stage: String(stage),
          features: "global average pool of the stage output, frozen encoder in eval mode, no augmentation",
        },
      );
    } catch (error) {
      const full = (error as NodeJS.ErrnoException).code === "ENOSPC" ? ": the disk is full, free some space" : "";
      throw new TrainingError(`cannot write ${file} (${(error as Error).message})${full}`);
    }
    const [count, dim] = set.features.shape;
    set.features.dispose();
    set.labels.dispose();
    return { file, count, dim, dataset: dataset.name, stage };
  } finally {
    run.encoder.dispose();
  }
}
