// The datasets of a run, opened and checked before anything is written to the run directory.
import { type ImageDataset, subset } from "../data/dataset";
import { type DatasetSpec, openDataset } from "../data/datasets";
import { TrainingError } from "./errors";
import type { TrainOptions } from "./options";
import { evalDataSpec } from "./readout";

/** The datasets of a run, opened (and so checked) before anything is written. */
export interface RunData {
  pretrain: ImageDataset;
  train: ImageDataset;
  test: ImageDataset;
  stepsPerEpoch: number;
}

export async function openRunData(
  options: TrainOptions,
  log: (m: string) => void,
  worldSize: number,
): Promise<RunData> {
  const open = async (spec: DatasetSpec, role: string): Promise<ImageDataset> => {
    try {
      return await openDataset(spec, { log: (m) => log(`${role} data: ${m}`) });
    } catch (error) {
      throw new TrainingError(`${role} data (${spec.name}): ${(error as Error).message}`);
    }
  };
  // The labelled splits first, so that a missing val/ folder is reported before anything else. An
  // image folder's are listed, not decoded: they stream through the kNN monitor and the readout
  // (a file that fails to decode is found there, and stops the run or is skipped as for pretraining).
  const test = await open(evalDataSpec(options.testData), "test");
  const train = await open(evalDataSpec(options.trainData), "readout train");
  if (train.labels === null) {
    throw new TrainingError(
      `readout train data (${options.trainData.name}): ${train.name} has no labels; the linear readout and kNN need labelled images (class folders)`,
    );
  }
  const { subset: subsetOptions, ...pretrainSpec } = options.pretrainData;
  let pretrain = await open({ ...pretrainSpec, labelFree: true }, "pretraining");
  if (subsetOptions !== undefined) {
    if (subsetOptions.count > pretrain.count) {
      throw new TrainingError(
        `a pretraining subset of ${subsetOptions.count} images (trainSubset, --train-subset) exceeds the ${pretrain.count} images of ${pretrain.name}; ` +
          `nothing was written: choose at most ${pretrain.count} (0: all)`,
        2,
      );
    }
    pretrain = subset(pretrain, subsetOptions);
  }
  // Full batches only (the loader's dropLast default); data parallel: global batches of batchSize per rank.
  const globalBatch = options.batchSize * worldSize;
  const stepsPerEpoch = Math.floor(pretrain.count / globalBatch);
  if (stepsPerEpoch === 0) {
    throw new TrainingError(
      `batch size ${options.batchSize}${worldSize > 1 ? ` x ${worldSize} ranks` : ""} exceeds the ${pretrain.count} images of ${pretrain.name}; nothing was written`,
      2,
    );
  }
  return { pretrain, train, test, stepsPerEpoch };
}
