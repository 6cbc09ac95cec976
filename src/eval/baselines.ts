// The evaluation of an encoder and the baselines that go through the same protocol
// (docs/methods.md, "Evaluation as implemented"):
//   - evaluateEncoder: frozen features of the train and test batches (eval mode, no autograd),
//     then linear readout and kNN. The trained encoder and the random-init encoder (a fresh,
//     untouched one the trainer builds) both go through it, identically.
//   - raw pixels: evaluateEncoder(rawPixelsFeatures, …).
//   - trainSupervised: the SAME encoder trained end to end with a linear head and cross-entropy
//     (SGD with momentum, cosine schedule); afterwards it is read out with evaluateEncoder like
//     the others (its head is not used for the reported number).
import { cat } from "../torch/creation";
import * as F from "../torch/functional";
import { Generator } from "../torch/random";
import { keep, scope } from "../torch/scope";
import type { Tensor } from "../torch/tensor";
import { Linear } from "../nn/layers";
import { Module } from "../nn/module";
import { SGD } from "../optim/sgd";
import { LRScheduler, LinearWarmupCosine } from "../optim/schedule";
import {
  type EvalBatch,
  type ExtractOptions,
  type FeatureSet,
  disposeFeatureSet,
  type EvalBatches,
  extractFeatures,
  withEvalAll,
} from "./features";
import { type LinearReadoutOptions, type LinearReadoutResult, ReadoutDivergedError, linearReadout } from "./linear";
import { type KnnOptions, type KnnResult, knnClassify } from "./knn";

/** An encoder to evaluate: a function images → [N, D] features, or a Module. */
export type Encoder = ((images: Tensor) => Tensor) | Module;

/**
 * Batches (sync or async: arrays, generators, DataLoader epochs), or a function returning fresh
 * batches each time it is called (for generators).
 */
export type BatchSource = EvalBatches | (() => EvalBatches);

/** What evaluateEncoder is doing when it reports progress. */
export type EvaluateStage = "train features" | "test features" | "linear readout";

interface FeatureModule extends Module {
  forwardFeatures(x: Tensor): Tensor;
}

function hasForwardFeatures(m: Module): m is FeatureModule {
  return typeof (m as unknown as { forwardFeatures?: unknown }).forwardFeatures === "function";
}

/** The feature function of a Module: forwardFeatures when it has one (ResNet), else forward. */
export function featureForward(module: Module): (images: Tensor) => Tensor {
  return hasForwardFeatures(module) ? (x) => module.forwardFeatures(x) : (x) => module.forward(x);
}

export interface EvaluateOptions {
  /** Number of classes for both readouts (default: inferred from the labels). */
  numClasses?: number;
  /** Linear readout options, or false to skip it. */
  linear?: LinearReadoutOptions | false;
  /** kNN options, or false to skip it. */
  knn?: KnnOptions | false;
  /** Feature extraction options (both splits). */
  extract?: ExtractOptions;
  /**
   * With a function encoder: the module(s) to put in eval mode while extracting (their modes are
   * restored afterwards). A Module encoder is always put in eval mode.
   */
  module?: Module | Module[];
  /** Keep the extracted features in the result (the caller disposes them). Default false. */
  keepFeatures?: boolean;
  /**
   * Progress: examples of each split extracted (total when `extract.total` / `trainTotal` /
   * `testTotal` or `extract.limit` tell it), then epochs of the linear readout.
   */
  onProgress?: (stage: EvaluateStage, done: number, total: number | undefined) => void;
  /** Examples in the train and test batches, for onProgress (not counted in advance). */
  trainTotal?: number;
  testTotal?: number;
}

export interface EvaluateResult {
  linear?: LinearReadoutResult;
  /** Set when the linear readout diverged (then `linear` is absent): what happened. */
  linearDiverged?: string;
  knn?: KnnResult;
  featureDim: number;
  trainSize: number;
  testSize: number;
  /** Milliseconds spent extracting features (both splits). */
  extractMs: number;
  /** With keepFeatures: the features (caller disposes them with disposeFeatureSet). */
  features?: { train: FeatureSet; test: FeatureSet };
}

function resolve<T>(source: T | (() => T)): T {
  return typeof source === "function" ? (source as () => T)() : source;
}

function evalModules(encoder: Encoder, options: EvaluateOptions): Module[] {
  const extra = options.module === undefined ? [] : Array.isArray(options.module) ? options.module : [options.module];
  return encoder instanceof Module ? [encoder, ...extra] : extra;
}

function readouts(train: FeatureSet, test: FeatureSet, extractMs: number, options: EvaluateOptions): EvaluateResult {
  const result: EvaluateResult = {
    featureDim: train.features.shape[1],
    trainSize: train.features.shape[0],
    testSize: test.features.shape[0],
    extractMs,
  };
  try {
    if (options.linear !== false) {
      const report = options.onProgress;
      const linear: LinearReadoutOptions = { numClasses: options.numClasses, ...(options.linear ?? {}) };
      if (report !== undefined && linear.onProgress === undefined) {
        linear.onProgress = (done, total) => report("linear readout", done, total);
      }
      try {
        result.linear = linearReadout(train, test, linear);
      } catch (error) {
        if (!(error instanceof ReadoutDivergedError)) throw error;
        result.linearDiverged = error.message;
      }
    }
    if (options.knn !== false) {
      result.knn = knnClassify(train, test, { numClasses: options.numClasses, ...(options.knn ?? {}) });
    }
  } catch (error) {
    disposeFeatureSet(train);
    disposeFeatureSet(test);
    throw error;
  }
  if (options.keepFeatures) {
    result.features = { train, test };
  } else {
    disposeFeatureSet(train);
    disposeFeatureSet(test);
  }
  return result;
}

function extractOptions(
  options: EvaluateOptions,
  stage: "train features" | "test features",
  total: number | undefined,
): ExtractOptions {
  const report = options.onProgress;
  const extract: ExtractOptions = { ...options.extract, total: total ?? options.extract?.total };
  if (report !== undefined) {
    const inner = extract.onProgress;
    extract.onProgress = (done, all) => {
      inner?.(done, all);
      report(stage, done, all);
    };
  }
  return extract;
}

/**
 * Evaluates a frozen encoder: extracts features of the train and test batches (sync or async;
 * Modules in eval mode, no autograd, modes restored afterwards), then runs the linear readout and
 * the kNN monitor on them. The encoder's parameters and buffers are never modified. Every encoder
 * compared in a report (trained, random-init, raw pixels, supervised) must go through this with
 * the same batches and options.
 */
export async function evaluateEncoder(
  encoder: Encoder,
  trainBatches: BatchSource,
  testBatches: BatchSource,
  options: EvaluateOptions = {},
): Promise<EvaluateResult> {
  const forward = encoder instanceof Module ? featureForward(encoder) : encoder;
  const t0 = performance.now();
  const [train, test] = await withEvalAll(evalModules(encoder, options), async () => {
    const tr = await extractFeatures(
      forward,
      resolve(trainBatches),
      extractOptions(options, "train features", options.trainTotal),
    );
    try {
      return [
        tr,
        await extractFeatures(
          forward,
          resolve(testBatches),
          extractOptions(options, "test features", options.testTotal),
        ),
      ];
    } catch (error) {
      disposeFeatureSet(tr);
      throw error;
    }
  });
  return readouts(train, test, performance.now() - t0, options);
}

// ---- supervised baseline ----

export interface SupervisedOptions {
  epochs: number;
  /** Peak learning rate (default 0.1). */
  lr?: number;
  /** SGD momentum (default 0.9). */
  momentum?: number;
  nesterov?: boolean;
  /** L2 weight decay on every parameter of encoder and head (default 5e-4). */
  weightDecay?: number;
  /** Epochs of linear warmup before the cosine decay (default 0). */
  warmupEpochs?: number;
  /**
   * Batches per epoch, for a per-step cosine schedule. Default: the length of the first epoch's
   * batches when that is an array; otherwise the learning rate follows the schedule per epoch.
   */
  stepsPerEpoch?: number;
  /** Label smoothing of the cross-entropy (default 0). */
  labelSmoothing?: number;
  /** Seed of the head's initialisation (default 0). */
  seed?: number;
  /** Dispose each batch after its step (see ExtractOptions.disposeBatches). Default false. */
  disposeBatches?: boolean;
  /** The features the head reads (default: featureForward(encoder)). Must return [N, featureDim]. */
  forward?: (images: Tensor) => Tensor;
  /** Called after every epoch. */
  onEpoch?: (stats: SupervisedEpoch) => void;
}

export interface SupervisedEpoch {
  epoch: number;
  /** Mean cross-entropy over the epoch's batches (weighted by batch size). */
  loss: number;
  /** Running top-1 of the head on the (augmented) training batches. */
  trainTop1: number;
  /** Learning rate at the end of the epoch. */
  lr: number;
  examples: number;
}

export interface SupervisedResult {
  /** The trained linear head (the caller owns it: dispose() it). */
  head: Linear;
  history: SupervisedEpoch[];
  steps: number;
  ms: number;
}

class SupervisedRun {
  readonly head: Linear;
  readonly optimizer: SGD;
  readonly scheduler: LRScheduler;
  readonly forward: (images: Tensor) => Tensor;
  readonly history: SupervisedEpoch[] = [];
  readonly modes: [Module, boolean][];
  readonly t0 = performance.now();
  steps = 0;
  perStep: boolean;
  #loss = 0;
  #correct = 0;
  #examples = 0;

  constructor(
    readonly encoder: Module,
    readonly featureDim: number,
    readonly numClasses: number,
    readonly o: SupervisedOptions,
    firstEpochLength: number | null,
  ) {
    if (!Number.isInteger(o.epochs) || o.epochs < 1)
      throw new RangeError(`trainSupervised: epochs must be a positive integer, got ${o.epochs}`);
    if (!Number.isInteger(featureDim) || featureDim < 1)
      throw new RangeError(`trainSupervised: featureDim must be a positive integer, got ${featureDim}`);
    if (!Number.isInteger(numClasses) || numClasses < 2)
      throw new RangeError(`trainSupervised: numClasses must be an integer >= 2, got ${numClasses}`);
    const warmupEpochs = o.warmupEpochs ?? 0;
    if (!Number.isInteger(warmupEpochs) || warmupEpochs < 0 || warmupEpochs > o.epochs) {
      throw new RangeError(`trainSupervised: warmupEpochs must be an integer in [0, epochs], got ${warmupEpochs}`);
    }
    this.forward = o.forward ?? featureForward(encoder);
    this.head = new Linear(featureDim, numClasses, { generator: new Generator(o.seed ?? 0) });
    this.optimizer = new SGD([...encoder.parameters(), ...this.head.parameters()], {
      lr: o.lr ?? 0.1,
      momentum: o.momentum ?? 0.9,
      nesterov: o.nesterov ?? false,
      weightDecay: o.weightDecay ?? 5e-4,
    });
    const stepsPerEpoch = o.stepsPerEpoch ?? firstEpochLength;
    this.perStep = stepsPerEpoch !== null && stepsPerEpoch !== undefined;
    const unit = this.perStep ? (stepsPerEpoch as number) : 1;
    this.scheduler = new LRScheduler(
      this.optimizer,
      new LinearWarmupCosine({
        warmupSteps: warmupEpochs * unit,
        totalSteps: o.epochs * unit,
        baseLr: o.lr ?? 0.1,
        // Warmup from lr/10 rather than 0, so the first steps move.
        warmupStartFactor: warmupEpochs > 0 ? 0.1 : 0,
      }),
    );
    this.modes = encoder.modules().map((m) => [m, m.training] as [Module, boolean]);
    encoder.train();
    this.head.train();
  }

  /** One optimisation step on a batch; runs inside the caller's scope. */
  step(batch: EvalBatch): void {
    const n = batch.images.shape[0];
    this.optimizer.zeroGrad();
    const features = this.forward(batch.images);
    if (features.ndim !== 2 || features.shape[0] !== n || features.shape[1] !== this.featureDim) {
      throw new RangeError(
        `trainSupervised: the encoder's features have shape [${features.shape.join(", ")}], expected [${n}, ${this.featureDim}]`,
      );
    }
    const logits = this.head.forward(features);
    const y = batch.labels.long();
    const loss = F.crossEntropy(logits, y, { labelSmoothing: this.o.labelSmoothing ?? 0 });
    loss.backward();
    this.optimizer.step();
    if (this.perStep) this.scheduler.step();
    const value = loss.item();
    if (!Number.isFinite(value))
      throw new Error(`trainSupervised: the loss diverged (${value}) at step ${this.steps}; lower lr`);
    this.#loss += value * n;
    this.#correct += logits.detach().argmax(1).eq(y).sum().item();
    this.#examples += n;
    this.steps += 1;
  }

  endEpoch(epoch: number): void {
    if (this.#examples === 0) throw new Error(`trainSupervised: epoch ${epoch} had no batches`);
    const stats: SupervisedEpoch = {
      epoch,
      loss: this.#loss / this.#examples,
      trainTop1: this.#correct / this.#examples,
      lr: this.optimizer.paramGroups[0].lr,
      examples: this.#examples,
    };
    if (!this.perStep) this.scheduler.step();
    this.history.push(stats);
    this.#loss = 0;
    this.#correct = 0;
    this.#examples = 0;
    this.o.onEpoch?.(stats);
  }

  finish(): SupervisedResult {
    this.optimizer.dispose();
    this.restoreModes();
    return { head: this.head, history: this.history, steps: this.steps, ms: performance.now() - this.t0 };
  }

  fail(): void {
    this.optimizer.dispose();
    this.head.dispose();
    this.restoreModes();
  }

  restoreModes(): void {
    for (const [m, mode] of this.modes) m.training = mode;
  }
}

function disposeBatch(batch: EvalBatch): void {
  const d = (batch as { dispose?: unknown }).dispose;
  if (typeof d === "function") (d as () => void).call(batch);
  else {
    batch.images.release();
    batch.labels.release();
  }
}

/**
 * The supervised baseline: trains `encoder` (in place) end to end with a fresh linear head
 * Linear(featureDim, numClasses) and cross-entropy, SGD with momentum and a (warmup +) cosine
 * schedule, for `options.epochs` passes over `trainBatches()` (called once per epoch: augment
 * there; sync or async batches, e.g. a DataLoader with disposeBatches). The encoder is in training mode during the run; its previous mode is restored after.
 * Then read the encoder out with evaluateEncoder, exactly as the self-supervised encoders are.
 */
export async function trainSupervised(
  encoder: Module,
  featureDim: number,
  numClasses: number,
  trainBatches: () => EvalBatches,
  options: SupervisedOptions,
): Promise<SupervisedResult> {
  let batches = trainBatches();
  const run = new SupervisedRun(
    encoder,
    featureDim,
    numClasses,
    options,
    Array.isArray(batches) ? batches.length : null,
  );
  try {
    for (let epoch = 0; epoch < options.epochs; epoch++) {
      if (epoch > 0) batches = trainBatches();
      for await (const batch of batches) {
        try {
          scope(() => run.step(batch));
        } finally {
          if (options.disposeBatches) disposeBatch(batch);
        }
      }
      run.endEpoch(epoch);
    }
  } catch (error) {
    run.fail();
    throw error;
  }
  return run.finish();
}

/** Concatenates feature sets (e.g. several extraction passes) into a new one the caller owns. */
export function concatFeatureSets(sets: readonly FeatureSet[]): FeatureSet {
  if (sets.length === 0) throw new RangeError("concatFeatureSets: no sets");
  const out = scope(() => ({
    features: cat(sets.map((s) => s.features)),
    labels: cat(sets.map((s) => s.labels.long())),
  }));
  keep(out.features);
  keep(out.labels);
  return out;
}
