// The readout report of a pretrained encoder (docs/methods.md, "Evaluation protocols"): linear readout
// and kNN on frozen features, optionally per stage, beside the baselines on the same protocol.
// Used by `loco train` at the end of a run and by `loco eval` on any checkpoint.
import type { Tensor } from "../torch";
import { fromTypedArray, scope } from "../torch";
import type { Module } from "../nn/module";
import type { NormalizeConfig } from "../data/augment";
import type { ImageDataset } from "../data/dataset";
import { type EvalBatch, rawPixelsFeatures, stageForward } from "../eval/features";
import { type EvaluateResult, evaluateEncoder, trainSupervised } from "../eval/baselines";
import { type RunEncoder, encoderFeatureDim, encoderFeatures } from "./encoders";

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
  readout: { trainImages: number; testImages: number; epochs: number; features: string };
}

export interface ReadoutOptions {
  normalize: NormalizeConfig | null;
  readoutEpochs: number;
  /** Train images read out (0: all), chosen by a fixed stride. */
  readoutTrainSize: number;
  /** Test images read out (0: all), chosen by a fixed stride. */
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
  /** Progress: told before and after each evaluation (what is read out, and its result). */
  log?: (message: string) => void;
}

/** Labelled evaluation batches straight from a dataset: no augmentation, only normalisation. */
export function* evalBatches(
  dataset: ImageDataset,
  batchSize: number,
  normalize: NormalizeConfig | null,
): Generator<EvalBatch> {
  const labels = dataset.labels;
  if (labels === null) throw new Error(`${dataset.name}: evaluation needs labels`);
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

/** A deterministic subset (every k-th image), so monitors and readouts stay cheap on large splits. */
export function strided(dataset: ImageDataset, size: number): ImageDataset {
  if (size <= 0 || size >= dataset.count) return dataset;
  const stride = dataset.count / size;
  const picks = Int32Array.from({ length: size }, (_, i) => Math.floor(i * stride));
  const images = dataset.images;
  return {
    ...dataset,
    name: `${dataset.name}[every ${stride.toFixed(2)}]`,
    count: size,
    labels: dataset.labels === null ? null : Int32Array.from(picks, (i) => dataset.labels![i]),
    images: {
      count: size,
      channels: images.channels,
      height: images.height,
      width: images.width,
      read: (indices, out) =>
        images.read(
          Int32Array.from(indices, (i) => picks[i]),
          out,
        ),
      spec: () => {
        throw new Error("strided subsets are for in-process evaluation only");
      },
      close: () => {},
    },
  };
}

/** kNN top-1 of an encoder's features (the per-epoch monitor). */
export function knnMonitor(
  encoder: RunEncoder,
  bank: ImageDataset,
  queries: ImageDataset,
  normalize: NormalizeConfig | null,
): number {
  const result = evaluateEncoder(
    encoderFeatures(encoder),
    () => evalBatches(bank, 256, normalize),
    () => evalBatches(queries, 256, normalize),
    { module: encoder, linear: false, knn: { k: 200, temperature: 0.1 }, numClasses: bank.numClasses },
  );
  return result.knn!.top1;
}

/**
 * Reads out `encoder` (and the baselines) on `train` / `test`. The encoder is never modified.
 * Returns null when options.shouldStop asked to stop between two evaluations.
 */
export function readoutReport(
  encoder: RunEncoder,
  train: ImageDataset,
  test: ImageDataset,
  options: ReadoutOptions,
): ReadoutReport | null {
  const stop = (): boolean => options.shouldStop?.() ?? false;
  const log = options.log ?? ((): void => {});
  const readoutTrain = strided(train, options.readoutTrainSize);
  const readoutTest = strided(test, options.readoutTestSize ?? 0);
  const evaluate = (what: string, forward: (x: Tensor) => Tensor, modules: Module[]): EvaluateResult => {
    const started = performance.now();
    log(
      `readout: ${what}: features of ${readoutTrain.count} train and ${readoutTest.count} test images, linear readout (${options.readoutEpochs} epochs), kNN …`,
    );
    const r = evaluateEncoder(
      forward,
      () => evalBatches(readoutTrain, 256, options.normalize),
      () => evalBatches(readoutTest, 256, options.normalize),
      {
        module: modules,
        numClasses: train.numClasses,
        linear: { epochs: options.readoutEpochs, seed: options.seed },
        knn: { k: 200, temperature: 0.1 },
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
  const trained = evaluate("the trained encoder", encoderFeatures(encoder), [encoder]);
  if (stop()) return null;
  const report: ReadoutReport = {
    linear: { ...linearScore(trained), trainTop1: trained.linear?.trainTop1 ?? null },
    knn: { top1: trained.knn!.top1, k: 200 },
    baselines: {},
    readout: {
      trainImages: readoutTrain.count,
      testImages: readoutTest.count,
      epochs: options.readoutEpochs,
      features: "global average pool of the last stage; no augmentation",
    },
  };
  if (options.perStage) {
    const stages = encoder.stages();
    report.perStage = [];
    for (let k = 0; k < stages.length; k++) {
      const r = evaluate(`stage ${k + 1}`, stageForward(stages, k), [encoder]);
      report.perStage.push({ stage: k + 1, linear: linearScore(r), knn: { top1: r.knn!.top1 } });
      if (stop()) return null;
    }
  }
  for (const baseline of options.baselines) {
    if (stop()) return null;
    if (baseline === "raw-pixels") {
      report.baselines.rawPixels = score(evaluate("raw pixels", rawPixelsFeatures, []));
      continue;
    }
    const fresh = options.freshEncoder();
    try {
      if (baseline === "supervised") {
        // Supervised end to end on the readout split's labelled images (no augmentation).
        log(`readout: training the supervised baseline (${options.supervisedEpochs} epochs) …`);
        const supervised = trainSupervised(
          fresh,
          encoderFeatureDim(fresh),
          train.numClasses,
          () => evalBatches(readoutTrain, options.batchSize, options.normalize),
          {
            epochs: options.supervisedEpochs,
            seed: options.seed,
            disposeBatches: true,
            forward: encoderFeatures(fresh),
          },
        );
        supervised.head.dispose();
        report.baselines.supervised = score(evaluate("supervised baseline", encoderFeatures(fresh), [fresh]));
      } else {
        report.baselines.randomInit = score(evaluate("random-init encoder", encoderFeatures(fresh), [fresh]));
      }
    } finally {
      fresh.dispose();
    }
  }
  return report;
}
