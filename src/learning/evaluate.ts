// Reading out a run's checkpoint after training (`loco eval` and library users): the run's own
// readout settings unless overridden, the report written atomically beside the run.
import * as path from "node:path";
import type { BaselineName, ReadoutReport } from "./readout";
import { readoutReport } from "./readout";
import { openDataset } from "../data/datasets";
import { buildRunEncoder } from "./encoders";
import type { MethodName, LocalLearningConfig } from "./methods";
import { describeMethod } from "./options";
import { writeJsonAtomic } from "./rundir";
import { openRun, readRunConfig, runDirOf } from "./runs";

export interface EvaluateRunOptions {
  /** Default: the run's. */
  readoutEpochs?: number;
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
  const config = readRunConfig(runDirOf(target));
  const train = await openDataset(config.trainData);
  const test = await openDataset(config.testData);
  const run = openRun(target, train.channels, log);
  try {
    const o = run.options;
    log(`evaluating ${run.checkpoint} (step ${run.step}) …`);
    const report = readoutReport(run.encoder, train, test, {
      normalize: o.normalize,
      readoutEpochs: options.readoutEpochs ?? o.readoutEpochs,
      readoutTrainSize: options.readoutTrainSize ?? o.readoutTrainSize,
      readoutTestSize: options.readoutTestSize ?? o.readoutTestSize ?? 0,
      baselines: options.baselines ?? [],
      perStage: options.perStage ?? false,
      supervisedEpochs: options.supervisedEpochs ?? o.supervisedEpochs,
      batchSize: o.batchSize,
      seed: o.seed,
      freshEncoder: () => buildRunEncoder(o, train.channels),
      log,
    })!;
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
