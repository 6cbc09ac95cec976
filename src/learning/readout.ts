// The readout report of a pretrained encoder (docs/methods.md, "Evaluation as implemented"): linear readout
// and kNN on frozen features, optionally per stage, beside the baselines on the same protocol.
// Used by `loco train` at the end of a run and by `loco eval` on any checkpoint.
import type { Tensor } from "../torch";
import { fromTypedArray, scope } from "../torch";
import type { Module } from "../nn/module";
import type { NormalizeConfig } from "../data/augment";
import { evalTransform } from "../data/augment";
import { type ImageDataset, SubsetImages } from "../data/dataset";
import type { DatasetSpec } from "../data/datasets";
import type { BadImage } from "../data/folder";
import { DataLoader } from "../data/loader";
import { streamedFiles } from "../data/stream";
import { type EvalBatch, type EvalBatches, rawPixelsFeatures, stageForward } from "../eval/features";
import { type EvaluateResult, type EvaluateStage, evaluateEncoder, trainSupervised } from "../eval/baselines";
import { DEFAULT_WEIGHT_DECAY_GRID } from "../eval/linear";
import { type RunEncoder, encoderFeatureDim, encoderFeatures } from "./encoders";
import { naturalStages } from "./split";

export type BaselineName = "random-init" | "supervised" | "raw-pixels";
export const BASELINE_NAMES: readonly BaselineName[] = ["random-init", "supervised", "raw-pixels"];

/** A linear readout's accuracy: null when its loss diverged (`diverged` then says how). */
export interface LinearScore {
  top1: number | null;
  diverged?: string;
}

export interface Score {
  top1: number | null;
  linear: LinearScore;
  knn: { top1: number };
}

export interface ReadoutReport {
  linear: LinearScore & { trainTop1: number | null };
  knn: { top1: number; k: number };
  perStage?: { stage: number; linear: LinearScore; knn: { top1: number } }[];
  baselines: Partial<Record<"randomInit" | "supervised" | "rawPixels", Score>>;
  readout: {
    trainImages: number;
    testImages: number;
    epochs: number;
    features: string;
    /** The weight decays the linear readout chose from (on held-out train features), or the one it used. */
    weightDecays: number[];
    /** The weight decay chosen for the trained encoder's readout (null when it diverged). */
    weightDecay: number | null;
  };
}

export interface ReadoutOptions {
  normalize: NormalizeConfig | null;
  readoutEpochs: number;
  /**
   * The linear readout's L2 weight decay: one value is used as is; several are a grid, and each
   * encoder (baselines included) gets the value that scores best on a held-out 20% of its train
   * features, then is refitted on all of them (default: eval's DEFAULT_WEIGHT_DECAY_GRID).
   */
  readoutWeightDecays?: readonly number[];
  /** Train images read out (0: all), chosen by a fixed stride. */
  readoutTrainSize: number;
  /** Test images read out (0 or absent: all), chosen by a fixed stride. */
  readoutTestSize?: number;
  baselines: readonly BaselineName[];
  perStage: boolean;
  supervisedEpochs: number;
  batchSize: number;
  seed: number;
  /** A fresh encoder of the same architecture and init (random-init and supervised baselines). */
  freshEncoder: () => RunEncoder;
  /** Checked between evaluations: true ends the report early (readoutReport returns null). */
  shouldStop?: () => boolean;
  /**
   * Progress of each evaluation: `what` names the encoder ("trained", "stage 2", "raw-pixels", …),
   * `stage` what it is doing (train features, test features: images done of total; linear
   * readout: epochs done of total).
   */
  onProgress?: (what: string, stage: EvaluateStage, done: number, total: number | undefined) => void;
  /** A line before and after each evaluation (what is read out, on how many images, its result). */
  log?: (message: string) => void;
  /** How streamed image folders are read (worker threads, bad files). */
  data?: EvalBatchOptions;
}

export interface EvalBatchOptions {
  /** Streamed image folders: data worker threads decoding the images (default 1). */
  workers?: number;
  /** Streamed image folders with onBadImage "skip": told about each file skipped (its position takes the next good file). */
  onBadImage?: (bad: BadImage) => void;
}

/**
 * Labelled evaluation batches of a dataset, in order: no augmentation, only normalisation. Pixels
 * held in memory are read batch by batch on the calling thread (sync batches). A streamed image
 * folder (or a subset of one) goes through a DataLoader instead (async batches): each image is
 * decoded, its shorter side resized to the dataset's size and its centre kept as the batch is
 * prepared, so only one batch of pixels (per worker) exists at a time and evaluation memory does
 * not grow with the split; only the features accumulate. Each batch is freed when the next one
 * is asked for.
 */
export function evalBatches(
  dataset: ImageDataset,
  batchSize: number,
  normalize: NormalizeConfig | null,
  options: EvalBatchOptions = {},
): EvalBatches {
  if (dataset.labels === null) throw new Error(`${dataset.name}: evaluation needs labels`);
  return streamedFiles(dataset.images.spec()) === null
    ? memoryEvalBatches(dataset, batchSize, normalize)
    : streamedEvalBatches(dataset, batchSize, normalize, options);
}

function* memoryEvalBatches(
  dataset: ImageDataset,
  batchSize: number,
  normalize: NormalizeConfig | null,
): Generator<EvalBatch> {
  const labels = dataset.labels!;
  const { channels: c, height: h, width: w } = dataset;
  for (let start = 0; start < dataset.count; start += batchSize) {
    const n = Math.min(batchSize, dataset.count - start);
    const indices = Int32Array.from({ length: n }, (_, i) => start + i);
    const pixels = dataset.images.read(indices);
    yield scope(() => {
      let images = fromTypedArray(pixels.subarray(0, n * c * h * w), [n, c, h, w])
        .float()
        .div(255);
      if (normalize) {
        const mean = fromTypedArray(Float32Array.from(normalize.mean), [1, c, 1, 1]);
        const std = fromTypedArray(Float32Array.from(normalize.std), [1, c, 1, 1]);
        images = images.sub(mean).div(std);
      }
      return { images, labels: fromTypedArray(Int32Array.from(indices, (i) => labels[i])).long() };
    });
  }
}

async function* streamedEvalBatches(
  dataset: ImageDataset,
  batchSize: number,
  normalize: NormalizeConfig | null,
  options: EvalBatchOptions,
): AsyncGenerator<EvalBatch> {
  const loader = new DataLoader(dataset, {
    batchSize,
    augment: evalTransform([dataset.height, dataset.width], { normalize }),
    views: 1,
    shuffle: false,
    dropLast: false,
    workers: options.workers ?? 1,
    onBadImage: options.onBadImage,
  });
  try {
    for (let b = 0; b < loader.batchesPerEpoch; b++) {
      const batch = await loader.next();
      try {
        yield { images: batch.views[0], labels: batch.labels! };
      } finally {
        batch.dispose();
      }
    }
  } finally {
    await loader.close();
  }
}

/**
 * The spec of a labelled split read for evaluation (readout, kNN monitor, fine-tuning's test,
 * embeddings): an image folder streams (./evalBatches), so no split is ever decoded whole into
 * memory; other datasets are opened as given.
 */
export function evalDataSpec(spec: DatasetSpec): DatasetSpec {
  return spec.name === "folder" ? { ...spec, stream: true } : spec;
}

/**
 * A deterministic subset (every k-th image), so monitors and readouts stay cheap on large splits.
 * It is an ordinary subset view, so a streamed folder's subset streams too.
 */
export function strided(dataset: ImageDataset, size: number): ImageDataset {
  if (size <= 0 || size >= dataset.count) return dataset;
  const stride = dataset.count / size;
  const picks = Int32Array.from({ length: size }, (_, i) => Math.floor(i * stride));
  return {
    ...dataset,
    name: `${dataset.name}[every ${stride.toFixed(2)}]`,
    count: size,
    labels: dataset.labels === null ? null : Int32Array.from(picks, (i) => dataset.labels![i]),
    images: new SubsetImages(dataset.images, picks),
  };
}

/** kNN top-1 of an encoder's features (the per-epoch monitor). */
export async function knnMonitor(
  encoder: RunEncoder,
  bank: ImageDataset,
  queries: ImageDataset,
  normalize: NormalizeConfig | null,
  data: EvalBatchOptions = {},
): Promise<number> {
  const result = await evaluateEncoder(
    encoderFeatures(encoder),
    () => evalBatches(bank, 256, normalize, data),
    () => evalBatches(queries, 256, normalize, data),
    { module: encoder, linear: false, knn: { k: 200, temperature: 0.1 }, numClasses: bank.numClasses },
  );
  return result.knn!.top1;
}

/**
 * Reads out `encoder` (and the baselines) on `train` / `test`. The encoder is never modified.
 * Returns null when options.shouldStop asked to stop between two evaluations.
 */
export async function readoutReport(
  encoder: RunEncoder,
  train: ImageDataset,
  test: ImageDataset,
  options: ReadoutOptions,
): Promise<ReadoutReport | null> {
  const stop = (): boolean => options.shouldStop?.() ?? false;
  const readoutTrain = strided(train, options.readoutTrainSize);
  const readoutTest = strided(test, options.readoutTestSize ?? 0);
  const report = options.onProgress;
  const log = options.log ?? ((): void => {});
  const weightDecays = [...(options.readoutWeightDecays ?? DEFAULT_WEIGHT_DECAY_GRID)];
  const weightDecay =
    weightDecays.length > 1 ? { selectWeightDecay: weightDecays } : { weightDecay: weightDecays[0] ?? 0 };
  const evaluate = async (what: string, forward: (x: Tensor) => Tensor, modules: Module[]): Promise<EvaluateResult> => {
    const started = performance.now();
    log(
      `readout: ${what}: features of ${readoutTrain.count} train and ${readoutTest.count} test images, ` +
        `linear readout (${options.readoutEpochs} epochs), kNN …`,
    );
    const r = await evaluateEncoder(
      forward,
      () => evalBatches(readoutTrain, 256, options.normalize, options.data),
      () => evalBatches(readoutTest, 256, options.normalize, options.data),
      {
        module: modules,
        numClasses: train.numClasses,
        linear: { epochs: options.readoutEpochs, seed: options.seed, ...weightDecay },
        knn: { k: 200, temperature: 0.1 },
        trainTotal: readoutTrain.count,
        testTotal: readoutTest.count,
        onProgress: report === undefined ? undefined : (stage, done, total) => report(what, stage, done, total),
      },
    );
    if (r.linearDiverged !== undefined) {
      log(`warning: readout: ${what}: the linear readout diverged (${r.linearDiverged}); reported as diverged`);
    }
    log(
      `readout: ${what}: linear ${r.linear === undefined ? "diverged" : `${(r.linear.top1 * 100).toFixed(2)}%`}, kNN ${(r.knn!.top1 * 100).toFixed(2)}% ` +
        `(${((performance.now() - started) / 1000).toFixed(1)} s)`,
    );
    return r;
  };
  const linearScore = (r: EvaluateResult): LinearScore =>
    r.linear === undefined ? { top1: null, diverged: r.linearDiverged } : { top1: r.linear.top1 };
  const score = (r: EvaluateResult): Score => ({
    top1: r.linear?.top1 ?? null,
    linear: linearScore(r),
    knn: { top1: r.knn!.top1 },
  });
  const trained = await evaluate("trained", encoderFeatures(encoder), [encoder]);
  if (stop()) return null;
  const result: ReadoutReport = {
    linear: { ...linearScore(trained), trainTop1: trained.linear?.trainTop1 ?? null },
    knn: { top1: trained.knn!.top1, k: 200 },
    baselines: {},
    readout: {
      trainImages: readoutTrain.count,
      testImages: readoutTest.count,
      epochs: options.readoutEpochs,
      features: "global average pool of the last stage; no augmentation",
      weightDecays,
      weightDecay: trained.linear?.weightDecay ?? null,
    },
  };
  if (options.perStage) {
    const stages = naturalStages(encoder);
    result.perStage = [];
    for (let k = 0; k < stages.length; k++) {
      // The last stage pooled is the encoder's feature (encoderFeatures): its readout is the trained
      // one, not computed twice (feature extraction dominates a readout's time).
      const r =
        k === stages.length - 1 ? trained : await evaluate(`stage ${k + 1}`, stageForward(stages, k), [encoder]);
      result.perStage.push({ stage: k + 1, linear: linearScore(r), knn: { top1: r.knn!.top1 } });
      if (stop()) return null;
    }
  }
  for (const baseline of options.baselines) {
    if (stop()) return null;
    if (baseline === "raw-pixels") {
      result.baselines.rawPixels = score(await evaluate(baseline, rawPixelsFeatures, []));
      continue;
    }
    const fresh = options.freshEncoder();
    try {
      if (baseline === "supervised") {
        // Supervised end to end on the readout split's labelled images (no augmentation).
        const supervised = await trainSupervised(
          fresh,
          encoderFeatureDim(fresh),
          train.numClasses,
          () => evalBatches(readoutTrain, options.batchSize, options.normalize, options.data),
          {
            epochs: options.supervisedEpochs,
            seed: options.seed,
            disposeBatches: true,
            forward: encoderFeatures(fresh),
          },
        );
        supervised.head.dispose();
        result.baselines.supervised = score(await evaluate(baseline, encoderFeatures(fresh), [fresh]));
      } else {
        result.baselines.randomInit = score(await evaluate(baseline, encoderFeatures(fresh), [fresh]));
      }
    } finally {
      fresh.dispose();
    }
  }
  return result;
}
