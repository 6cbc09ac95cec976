// Linear readout (linear evaluation protocol, docs/methods.md): multinomial logistic regression on
// cached, frozen features. Only features go in; the encoder is never touched.
//
// Protocol, fixed so that every encoder (trained, random-init, supervised, raw pixels) is read out
// identically:
//   1. Standardise every feature with the TRAIN features' mean and standard deviation (population
//      std; features constant on the train set are only centred). The test features use the same
//      train statistics. (`standardize: false` switches this off.)
//   2. Train Linear(D, numClasses), zero-initialised, with cross-entropy on mini-batches for a fixed
//      number of epochs: Adam (default, lr 1e-3) or SGD with Nesterov momentum 0.9, both with a
//      cosine decay of the learning rate to 0 over all steps. A seeded Generator shuffles the
//      examples each epoch, so the result is deterministic for a seed (and thread count).
//   3. Weight decay is an L2 penalty on the weight matrix only (not the bias), default 0. With
//      `selectWeightDecay` the value is chosen from a small grid by accuracy on a held-out part of
//      the TRAIN features (default 20 %, a seeded random split), then the classifier is retrained
//      on all train features with it. The test split is never used for any choice.
//   4. Report top-1 (and top-5 when there are more than 5 classes) on the test split as fractions.
import { noGrad } from "../torch/autograd";
import { randperm, where } from "../torch/creation";
import * as F from "../torch/functional";
import { Generator } from "../torch/random";
import { scope } from "../torch/scope";
import type { Tensor } from "../torch/tensor";
import { Linear } from "../nn/layers";
import { Adam } from "../optim/adam";
import { SGD } from "../optim/sgd";
import { LRScheduler, LinearWarmupCosine } from "../optim/schedule";
import type { FeatureSet } from "./features";

export interface LinearReadoutOptions {
  /** Number of classes (default: largest label in train or test + 1). */
  numClasses?: number;
  /** Passes over the train features (default 100). */
  epochs?: number;
  /** Mini-batch size (default 256; the last batch of an epoch may be smaller). */
  batchSize?: number;
  /** "adam" (default) or "sgd" (Nesterov momentum). */
  optimizer?: "adam" | "sgd";
  /** Peak learning rate of the cosine schedule (default 1e-3 for Adam, 0.1 for SGD). */
  lr?: number;
  /** SGD momentum (default 0.9). */
  momentum?: number;
  /** L2 weight decay of the weight matrix (default 0). Ignored when selectWeightDecay is set. */
  weightDecay?: number;
  /**
   * Choose the weight decay on a held-out part of the train features: true uses the grid
   * DEFAULT_WEIGHT_DECAY_GRID, an array gives the grid. Default off (weightDecay is used as is).
   */
  selectWeightDecay?: boolean | readonly number[];
  /** Share of the train features held out for selectWeightDecay (default 0.2). */
  validationFraction?: number;
  /** Standardise features with the train mean / std (default true). */
  standardize?: boolean;
  /** Seed of the shuffles and of the held-out split (default 0). */
  seed?: number;
  /** Test rows scored at a time (default 4096). */
  chunkSize?: number;
  /** Called after every epoch of the final fit with the epoch's mean train loss. */
  onEpoch?: (epoch: number, loss: number) => void;
  /**
   * Called after every epoch of every fit with the epochs done and the total: `epochs`, times
   * (grid size + 1) with selectWeightDecay.
   */
  onProgress?: (done: number, total: number) => void;
}

export interface WeightDecayTrial {
  weightDecay: number;
  /** Top-1 on the held-out part of the train features. */
  valTop1: number;
}

export interface LinearReadoutResult {
  /** Top-1 accuracy on the test features, in [0, 1]. */
  top1: number;
  /** Top-5 accuracy on the test features (only when numClasses > 5). */
  top5?: number;
  /** Top-1 accuracy of the final classifier on the train features. */
  trainTop1: number;
  /** Mean cross-entropy over the last epoch (without the penalty). */
  trainLoss: number;
  epochs: number;
  batchSize: number;
  optimizer: "adam" | "sgd";
  lr: number;
  /** The weight decay used for the final fit (selected or given). */
  weightDecay: number;
  /** The grid search, when selectWeightDecay was set. */
  selection?: WeightDecayTrial[];
  standardized: boolean;
  numClasses: number;
  featureDim: number;
  trainSize: number;
  testSize: number;
  /** Predicted class of each test example. */
  predictions: Int32Array;
  /** Wall time of the whole readout in milliseconds. */
  ms: number;
}

/** The weight-decay grid of `selectWeightDecay: true`. */
export const DEFAULT_WEIGHT_DECAY_GRID: readonly number[] = [0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];

interface ResolvedOptions {
  numClasses: number;
  epochs: number;
  batchSize: number;
  optimizer: "adam" | "sgd";
  lr: number;
  momentum: number;
  standardize: boolean;
  chunkSize: number;
  /** Counts an epoch of any fit towards onProgress. */
  epochDone: () => void;
}

function positiveInt(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    throw new RangeError(`linearReadout: ${name} must be a positive integer, got ${String(value)}`);
  }
  return value;
}

function nonNegative(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new RangeError(`linearReadout: ${name} must be a finite number >= 0, got ${String(value)}`);
  }
  return value;
}

/** Checks a FeatureSet and returns [N, D]. */
export function checkFeatureSet(set: FeatureSet, what: string, fn: string): [number, number] {
  const { features, labels } = set;
  if (features.ndim !== 2)
    throw new RangeError(`${fn}: ${what} features must be [N, D], got [${features.shape.join(", ")}]`);
  const [n, d] = features.shape;
  if (labels.ndim !== 1 || labels.shape[0] !== n) {
    throw new RangeError(`${fn}: ${what} labels must have shape [${n}], got [${labels.shape.join(", ")}]`);
  }
  if (labels.dtype !== "int64" && labels.dtype !== "int32") {
    throw new TypeError(`${fn}: ${what} labels must be int64 class indices, got ${labels.dtype}`);
  }
  if (n === 0) throw new RangeError(`${fn}: ${what} set is empty`);
  return [n, d];
}

/** Largest label + 1 over the given label tensors, and a check that none is negative. */
export function inferNumClasses(fn: string, ...labels: Tensor[]): number {
  let max = -1;
  for (const l of labels) {
    const [lo, hi] = noGrad(() => scope(() => [l.min().item(), l.max().item()]));
    if (lo < 0) throw new RangeError(`${fn}: labels must be >= 0, found ${lo}`);
    max = Math.max(max, hi);
  }
  return max + 1;
}

function checkLabelsBelow(fn: string, numClasses: number, ...labels: Tensor[]): void {
  const n = inferNumClasses(fn, ...labels);
  if (n > numClasses) throw new RangeError(`${fn}: found label ${n - 1} but numClasses is ${numClasses}`);
}

/** Standardisation statistics of train features: mean [D] and std [D] (1 where constant). */
function standardizer(x: Tensor): { mean: Tensor; std: Tensor } {
  return noGrad(() =>
    scope(() => {
      const mean = x.mean(0);
      const std = x.std(0, { correction: 0 });
      return { mean, std: where(std.lt(1e-6), 1, std) };
    }),
  );
}

/** Accuracy (top-1 and optionally top-5) and predictions of a linear classifier, in row chunks. */
function score(
  head: Linear,
  x: Tensor,
  labels: Tensor,
  chunkSize: number,
  topK: boolean,
): { top1: number; top5?: number; predictions: Int32Array } {
  const n = x.shape[0];
  const predictions = new Int32Array(n);
  let correct1 = 0;
  let correct5 = 0;
  noGrad(() => {
    for (let start = 0; start < n; start += chunkSize) {
      scope(() => {
        const len = Math.min(chunkSize, n - start);
        const logits = head.forward(x.narrow(0, start, len));
        const y = labels.narrow(0, start, len).long();
        const pred = logits.argmax(1);
        correct1 += pred.eq(y).sum().item();
        predictions.set(Int32Array.from(pred.toArray()), start);
        if (topK) {
          const top = logits.topk(5, 1).indices;
          correct5 += top.eq(y.unsqueeze(1)).sum().item(); // at most one match per row
        }
      });
    }
  });
  return topK ? { top1: correct1 / n, top5: correct5 / n, predictions } : { top1: correct1 / n, predictions };
}

/** Standardises `xs` with the statistics of `reference` (or returns them unchanged). */
function standardizeAll(reference: Tensor, xs: Tensor[], enabled: boolean): Tensor[] {
  if (!enabled) return xs;
  return noGrad(() => {
    const { mean, std } = standardizer(reference);
    return xs.map((x) => x.sub(mean).div(std));
  });
}

/** Trains a zero-initialised Linear(D, C) on (x, y); the caller disposes the returned head. */
function fit(
  x: Tensor,
  y: Tensor,
  o: ResolvedOptions,
  weightDecay: number,
  seed: number,
  onEpoch?: (epoch: number, loss: number) => void,
): { head: Linear; loss: number } {
  const [n, d] = x.shape;
  // A generator of our own for the (overwritten) default init: the global RNG stream is untouched.
  const head = new Linear(d, o.numClasses, { generator: new Generator(seed) });
  noGrad(() => {
    head.weight.zero_();
    head.bias?.zero_();
  });
  const groups = [
    { params: [head.weight], weightDecay },
    { params: [head.bias as Tensor], weightDecay: 0 },
  ];
  const optimizer =
    o.optimizer === "adam"
      ? new Adam(groups, { lr: o.lr })
      : new SGD(groups, { lr: o.lr, momentum: o.momentum, nesterov: o.momentum > 0 });
  const stepsPerEpoch = Math.ceil(n / o.batchSize);
  const scheduler = new LRScheduler(
    optimizer,
    new LinearWarmupCosine({ warmupSteps: 0, totalSteps: o.epochs * stepsPerEpoch, baseLr: o.lr }),
  );
  const generator = new Generator(seed);
  let loss = NaN;
  try {
    for (let epoch = 0; epoch < o.epochs; epoch++) {
      let sum = 0;
      scope(() => {
        const order = randperm(n, { generator });
        for (let start = 0; start < n; start += o.batchSize) {
          scope(() => {
            const len = Math.min(o.batchSize, n - start);
            const idx = order.narrow(0, start, len);
            optimizer.zeroGrad();
            const l = F.crossEntropy(head.forward(x.indexSelect(0, idx)), y.indexSelect(0, idx));
            l.backward();
            optimizer.step();
            scheduler.step();
            sum += l.item() * len;
          });
        }
      });
      loss = sum / n;
      if (!Number.isFinite(loss))
        throw new ReadoutDivergedError(`linearReadout: the loss diverged (${loss}) at epoch ${epoch}; lower lr`);
      onEpoch?.(epoch, loss);
      o.epochDone();
    }
  } catch (error) {
    head.dispose();
    throw error;
  } finally {
    optimizer.dispose();
  }
  return { head, loss };
}

/**
 * The linear readout's loss went non-finite (features too large or non-finite, e.g. of an encoder
 * whose training diverged): callers report the readout as diverged instead of failing.
 */
export class ReadoutDivergedError extends Error {
  override name = "ReadoutDivergedError";
}

function resolveGrid(option: LinearReadoutOptions["selectWeightDecay"]): readonly number[] | null {
  if (option === undefined || option === false) return null;
  const grid = option === true ? DEFAULT_WEIGHT_DECAY_GRID : option;
  if (!Array.isArray(grid) || grid.length === 0) {
    throw new RangeError("linearReadout: selectWeightDecay must be true, false or a non-empty array of weight decays");
  }
  grid.forEach((w, i) => nonNegative(w, `selectWeightDecay[${i}]`));
  return grid;
}

const FN = "linearReadout";

/**
 * Linear readout of frozen features: trains a multinomial logistic regression on `train` and
 * reports its accuracy on `test` (see the protocol at the top of this file). Only the two feature
 * sets are read; they are not modified or disposed. Deterministic for a given seed.
 */
export function linearReadout(
  train: FeatureSet,
  test: FeatureSet,
  options: LinearReadoutOptions = {},
): LinearReadoutResult {
  const t0 = performance.now();
  const [n, d] = checkFeatureSet(train, "train", FN);
  const [m, dTest] = checkFeatureSet(test, "test", FN);
  if (d !== dTest) throw new RangeError(`${FN}: train features have ${d} dimensions but test features ${dTest}`);
  const optimizer = options.optimizer ?? "adam";
  if (optimizer !== "adam" && optimizer !== "sgd") {
    throw new RangeError(`${FN}: optimizer must be "adam" or "sgd", got ${JSON.stringify(optimizer)}`);
  }
  let numClasses: number;
  if (options.numClasses === undefined) {
    numClasses = inferNumClasses(FN, train.labels, test.labels);
  } else {
    numClasses = positiveInt(options.numClasses, "numClasses");
    checkLabelsBelow(FN, numClasses, train.labels, test.labels);
  }
  const o: ResolvedOptions = {
    numClasses,
    epochs: positiveInt(options.epochs ?? 100, "epochs"),
    batchSize: positiveInt(options.batchSize ?? 256, "batchSize"),
    optimizer,
    lr: nonNegative(options.lr ?? (optimizer === "adam" ? 1e-3 : 0.1), "lr"),
    momentum: nonNegative(options.momentum ?? 0.9, "momentum"),
    standardize: options.standardize ?? true,
    chunkSize: positiveInt(options.chunkSize ?? 4096, "chunkSize"),
    epochDone: () => {},
  };
  const seed = options.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0)
    throw new RangeError(`${FN}: seed must be a non-negative integer, got ${seed}`);
  const grid = resolveGrid(options.selectWeightDecay);
  const totalEpochs = o.epochs * (grid === null ? 1 : grid.length + 1);
  let epochsDone = 0;
  o.epochDone = () => options.onProgress?.(++epochsDone, totalEpochs);
  let weightDecay = nonNegative(options.weightDecay ?? 0, "weightDecay");
  const xTrain = train.features.dtype === "float32" ? train.features : null;
  if (xTrain === null || test.features.dtype !== "float32") {
    throw new TypeError(`${FN}: features must be float32 (got ${train.features.dtype} and ${test.features.dtype})`);
  }

  let selection: WeightDecayTrial[] | undefined;
  if (grid !== null) {
    const fraction = options.validationFraction ?? 0.2;
    if (!(fraction > 0 && fraction < 1))
      throw new RangeError(`${FN}: validationFraction must be in (0, 1), got ${fraction}`);
    const nVal = Math.round(fraction * n);
    if (nVal < 1 || nVal >= n)
      throw new RangeError(`${FN}: ${n} train examples are too few to hold out ${fraction} of them`);
    selection = scope(() => {
      const order = randperm(n, { generator: new Generator(seed + 1) });
      const valIdx = order.narrow(0, 0, nVal);
      const fitIdx = order.narrow(0, nVal, n - nVal);
      const xFit = xTrain.indexSelect(0, fitIdx);
      const yFit = train.labels.indexSelect(0, fitIdx).long();
      const yVal = train.labels.indexSelect(0, valIdx).long();
      const [a, b] = standardizeAll(xFit, [xFit, xTrain.indexSelect(0, valIdx)], o.standardize);
      return grid.map((w) => {
        const { head } = fit(a, yFit, o, w, seed);
        const { top1 } = score(head, b, yVal, o.chunkSize, false);
        head.dispose();
        return { weightDecay: w, valTop1: top1 };
      });
    });
    // The best held-out accuracy; ties go to the earlier (by default: smaller) weight decay.
    weightDecay = selection.reduce((best, t) => (t.valTop1 > best.valTop1 ? t : best)).weightDecay;
  }

  const final = scope(() => {
    const y = train.labels.long();
    const [a, b] = standardizeAll(xTrain, [xTrain, test.features], o.standardize);
    const { head, loss } = fit(a, y, o, weightDecay, seed, options.onEpoch);
    try {
      const trainScore = score(head, a, y, o.chunkSize, false);
      const testScore = score(head, b, test.labels, o.chunkSize, numClasses > 5);
      return { loss, trainTop1: trainScore.top1, testScore };
    } finally {
      head.dispose();
    }
  });

  const result: LinearReadoutResult = {
    top1: final.testScore.top1,
    trainTop1: final.trainTop1,
    trainLoss: final.loss,
    epochs: o.epochs,
    batchSize: o.batchSize,
    optimizer: o.optimizer,
    lr: o.lr,
    weightDecay,
    standardized: o.standardize,
    numClasses,
    featureDim: d,
    trainSize: n,
    testSize: m,
    predictions: final.testScore.predictions,
    ms: performance.now() - t0,
  };
  if (final.testScore.top5 !== undefined) result.top5 = final.testScore.top5;
  if (selection) result.selection = selection;
  return result;
}

/** Top-k accuracy helper for callers holding logits: fraction of rows whose label is in the top k. */
export function topkAccuracy(logits: Tensor, labels: Tensor, k = 1): number {
  return noGrad(() =>
    scope(() => {
      const n = logits.shape[0];
      if (n === 0) return 0;
      const kk = Math.min(k, logits.shape[1]);
      const top = logits.topk(kk, 1).indices;
      return top.eq(labels.long().unsqueeze(1)).sum().item() / n;
    }),
  );
}
