// The trainer: pretrain an encoder with SimCLR end to end, GIM or LoCo (any configuration of the
// router), monitor it with kNN every epoch, read it out with the linear protocol against the
// baselines, and keep everything in a run directory.
import * as fs from "node:fs";
import * as path from "node:path";
import {
  type Tensor,
  cat,
  defaultGenerator,
  fromTypedArray,
  getNumThreads,
  manualSeed,
  scope,
  setNumThreads,
} from "../torch";
import { Generator } from "../torch/random";
import type { Module } from "../nn/module";
import { ResNet, type ResNetDepth, type ResNetStem } from "../models/resnet";
import { LARS, excludeBiasAndNorm } from "../optim/lars";
import { SGD } from "../optim/sgd";
import { Adam } from "../optim/adam";
type AnyOptimizer = LARS | SGD | Adam;
import { LRScheduler, LinearWarmupCosine } from "../optim/schedule";
import { type AugmentConfig, type NormalizeConfig } from "../data/augment";
import type { ImageDataset } from "../data/dataset";
import { type DatasetSpec, openDataset } from "../data/datasets";
import { DataLoader } from "../data/loader";
import { type EvalBatch, rawPixelsFeatures, stageForward } from "../eval/features";
import { type EvaluateResult, evaluateEncoder, featureForward, trainSupervised } from "../eval/baselines";
import { Progress, formatDuration } from "../report/progress";
import { LocalLearner } from "./learner";
import type { LocalLearningConfig, MethodName } from "./methods";
import { type CheckpointMeta, CHECKPOINT_FORMAT, loadLatestCheckpoint, saveCheckpoint } from "./checkpoint";

export type BaselineName = "random-init" | "supervised" | "raw-pixels";
export const BASELINE_NAMES: readonly BaselineName[] = ["random-init", "supervised", "raw-pixels"];

export interface TrainOptions {
  method: MethodName;
  learning: LocalLearningConfig;
  /** Pretraining images (their labels, if any, are hidden). */
  pretrainData: DatasetSpec;
  /** Labelled train split for the readouts and kNN, and the test split. */
  trainData: DatasetSpec;
  testData: DatasetSpec;
  augment: AugmentConfig;
  /** Normalisation applied to evaluation images (the augmentation's own). */
  normalize: NormalizeConfig | null;
  encoder: { depth: ResNetDepth; width: number; stem: ResNetStem };
  epochs: number;
  batchSize: number;
  optimizer: "lars" | "sgd" | "adam";
  lr: number;
  weightDecay: number;
  momentum: number;
  warmupEpochs: number;
  seed: number;
  threads: number;
  workers: number;
  channelsLast: boolean;
  /** kNN monitor every this many epochs (0: off), on subsets of these sizes. */
  knnEvery: number;
  knnTrainSize: number;
  knnTestSize: number;
  /** Linear readout: epochs over cached features, and how many train images it reads (0: all). */
  readoutEpochs: number;
  readoutTrainSize: number;
  baselines: BaselineName[];
  /** Read out every stage's pooled features too. */
  perStage: boolean;
  /** Epochs of the supervised baseline. */
  supervisedEpochs: number;
  runDir: string;
  /** Checkpoint every N steps (0: at epoch ends only). */
  checkpointEvery: number;
  keepCheckpoints: number;
  /** Continue the run in runDir from its newest good checkpoint. */
  resume: boolean;
}

export interface StageResult {
  stage: number;
  linear: { top1: number };
  knn: { top1: number };
}

export interface Results {
  method: MethodName;
  dataset: string;
  encoder: string;
  epochs: number;
  linear: { top1: number; trainTop1: number };
  knn: { top1: number; k: number };
  perStage?: StageResult[];
  baselines: Partial<Record<"randomInit" | "supervised" | "rawPixels", { top1: number; linear: { top1: number }; knn: { top1: number } }>>;
  training: {
    seconds: number;
    steps: number;
    imagesPerSecond: number;
    dataWaitShare: number;
    finalLoss: number[];
  };
  readout: { trainImages: number; testImages: number; epochs: number; features: string };
}

function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, "w");
  try {
    fs.writeSync(fd, `${JSON.stringify(value, null, 2)}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/** Labelled evaluation batches straight from a dataset: no augmentation, only normalisation. */
export function* evalBatches(
  dataset: ImageDataset,
  batchSize: number,
  normalize: NormalizeConfig | null,
  limit = 0,
): globalThis.Generator<EvalBatch> {
  if (dataset.labels === null) throw new Error(`${dataset.name}: evaluation needs labels`);
  const count = limit > 0 ? Math.min(limit, dataset.count) : dataset.count;
  const { channels: c, height: h, width: w } = dataset;
  for (let start = 0; start < count; start += batchSize) {
    const n = Math.min(batchSize, count - start);
    const indices = Int32Array.from({ length: n }, (_, i) => start + i);
    const pixels = dataset.images.read(indices);
    const labels = Int32Array.from(indices, (i) => dataset.labels![i]);
    yield scope(() => {
      let images = fromTypedArray(pixels.subarray(0, n * c * h * w), [n, c, h, w]).float().div(255);
      if (normalize) {
        const mean = fromTypedArray(Float32Array.from(normalize.mean), [1, c, 1, 1]);
        const std = fromTypedArray(Float32Array.from(normalize.std), [1, c, 1, 1]);
        images = images.sub(mean).div(std);
      }
      return { images, labels: fromTypedArray(labels).long() };
    });
  }
}

/** A deterministic subset (every k-th image) for monitors, so they stay cheap on large splits. */
function strided(dataset: ImageDataset, size: number): ImageDataset {
  if (size <= 0 || size >= dataset.count) return dataset;
  const stride = dataset.count / size;
  const picks = Int32Array.from({ length: size }, (_, i) => Math.floor(i * stride));
  const images = dataset.images;
  return {
    ...dataset,
    name: `${dataset.name}[${size}]`,
    count: size,
    labels: dataset.labels === null ? null : Int32Array.from(picks, (i) => dataset.labels![i]),
    images: {
      count: size,
      channels: images.channels,
      height: images.height,
      width: images.width,
      read: (indices, out) => images.read(Int32Array.from(indices, (i) => picks[i]), out),
      spec: () => {
        throw new Error("strided subsets are for in-process evaluation only");
      },
      close: () => {},
    },
  };
}

function buildEncoder(options: TrainOptions, inChannels: number): ResNet {
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

function buildOptimizer(options: TrainOptions, named: [string, Tensor][]): AnyOptimizer {
  switch (options.optimizer) {
    case "lars":
      return new LARS(excludeBiasAndNorm(named), { lr: options.lr, momentum: options.momentum, weightDecay: options.weightDecay });
    case "sgd":
      return new SGD(excludeBiasAndNorm(named, { lars: false }), {
        lr: options.lr,
        momentum: options.momentum,
        weightDecay: options.weightDecay,
      });
    case "adam":
      return new Adam(excludeBiasAndNorm(named, { lars: false }), {
        lr: options.lr,
        weightDecay: options.weightDecay,
      });
  }
}

function namedLearnerParameters(encoder: ResNet, learner: LocalLearner): [string, Tensor][] {
  return [
    ...encoder.namedParameters().map(([k, v]) => [`encoder.${k}`, v] as [string, Tensor]),
    ...learner.decoders.namedParameters().map(([k, v]) => [`decoders.${k}`, v] as [string, Tensor]),
  ];
}

function modelState(encoder: ResNet, learner: LocalLearner): Map<string, Tensor> {
  const state = new Map<string, Tensor>();
  for (const [k, v] of encoder.stateDict()) state.set(`encoder.${k}`, v);
  for (const [k, v] of learner.decoders.stateDict()) state.set(`decoders.${k}`, v);
  return state;
}

function loadModelState(encoder: ResNet, learner: LocalLearner, state: Map<string, Tensor>, source: string): void {
  const enc = new Map<string, Tensor>();
  const dec = new Map<string, Tensor>();
  for (const [k, v] of state) {
    if (k.startsWith("encoder.")) enc.set(k.slice(8), v);
    else if (k.startsWith("decoders.")) dec.set(k.slice(9), v);
    else throw new Error(`${source}: unexpected tensor '${k}' in the model state`);
  }
  encoder.loadStateDict(enc);
  learner.decoders.loadStateDict(dec);
}

/** Which sequential phase an epoch belongs to (epochs split evenly between the losses). */
export function phaseOfEpoch(epoch: number, epochs: number, phases: number): number {
  return Math.min(phases - 1, Math.floor((epoch * phases) / epochs));
}

export interface TrainHooks {
  /** Called between steps; return true to stop after writing a checkpoint (Ctrl-C handling). */
  shouldStop?: () => boolean;
  log?: (message: string) => void;
  progress?: Progress;
}

export interface TrainOutcome {
  results: Results | null;
  /** True when training stopped early on request (a checkpoint was written). */
  interrupted: boolean;
}

/** Runs a whole training job; writes config, metrics, checkpoints and results into options.runDir. */
export async function train(options: TrainOptions, hooks: TrainHooks = {}): Promise<TrainOutcome> {
  const log = hooks.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  const progress = hooks.progress ?? new Progress();
  setNumThreads(options.threads);
  manualSeed(options.seed);
  fs.mkdirSync(options.runDir, { recursive: true });
  const metricsFile = path.join(options.runDir, "metrics.jsonl");
  const metric = (record: Record<string, unknown>): void => {
    fs.appendFileSync(metricsFile, `${JSON.stringify({ time: new Date().toISOString(), ...record })}\n`);
  };

  const trainSet = await openDataset({ ...options.pretrainData, labelFree: true });
  const trainLabelled = await openDataset(options.trainData);
  const testSet = await openDataset(options.testData);
  const encoder = buildEncoder(options, trainSet.channels);
  const learner = new LocalLearner(encoder, options.learning, { generator: new Generator(options.seed + 1) });
  const optimizer = buildOptimizer(options, namedLearnerParameters(encoder, learner));
  const loader = new DataLoader(trainSet, {
    batchSize: options.batchSize,
    augment: options.augment,
    views: 2,
    seed: options.seed,
    workers: options.workers,
  });
  const stepsPerEpoch = loader.batchesPerEpoch;
  const totalSteps = stepsPerEpoch * options.epochs;
  const schedule = new LinearWarmupCosine({
    baseLr: options.lr,
    warmupSteps: Math.min(totalSteps, Math.round(options.warmupEpochs * stepsPerEpoch)),
    totalSteps,
  });
  const scheduler = new LRScheduler(optimizer, schedule);
  const phases = learner.losses.length;
  let step = 0;
  let trainSeconds = 0;
  let waitSeconds = 0;

  if (options.resume) {
    const checkpoint = loadLatestCheckpoint(options.runDir, log);
    if (checkpoint === null) throw new Error(`${options.runDir}: --resume found no checkpoint to continue from`);
    loadModelState(encoder, learner, checkpoint.model, checkpoint.path);
    optimizer.loadStateDict({ tensors: checkpoint.optimizer, meta: checkpoint.meta.optimizer as never });
    for (const t of [...checkpoint.model.values(), ...checkpoint.optimizer.values()]) t.release();
    step = checkpoint.meta.step;
    scheduler.setStep(step);
    loader.seek(checkpoint.meta.position);
    defaultGenerator.setState(Uint8Array.from(Buffer.from(checkpoint.meta.generatorState, "base64")));
    trainSeconds = Number(checkpoint.meta.extra?.trainSeconds ?? 0);
    waitSeconds = Number(checkpoint.meta.extra?.waitSeconds ?? 0);
    log(`resumed from ${checkpoint.path} at step ${step} (epoch ${checkpoint.meta.position.epoch + 1})`);
  }

  const writeCheckpoint = (): string => {
    const position = loader.position;
    const meta: CheckpointMeta = {
      format: CHECKPOINT_FORMAT,
      step,
      position,
      phase: learner.phase,
      optimizer: null,
      generatorState: Buffer.from(defaultGenerator.getState()).toString("base64"),
      extra: { trainSeconds, waitSeconds },
    };
    const state = optimizer.stateDict();
    meta.optimizer = state.meta;
    return saveCheckpoint(options.runDir, meta, modelState(encoder, learner), state.tensors, options.keepCheckpoints);
  };

  const knnMonitor = (): number | null => {
    if (options.knnEvery <= 0 || trainLabelled.labels === null) return null;
    const bank = strided(trainLabelled, options.knnTrainSize);
    const queries = strided(testSet, options.knnTestSize);
    const result = evaluateEncoder(
      featureForward(encoder),
      () => evalBatches(bank, 256, options.normalize),
      () => evalBatches(queries, 256, options.normalize),
      { linear: false, knn: { k: 200, temperature: 0.1 }, numClasses: trainLabelled.numClasses },
    );
    return result.knn!.top1;
  };

  log(
    `loco train: ${options.method} on ${trainSet.name} (${trainSet.count} images, ${trainSet.channels}x${trainSet.height}x${trainSet.width}), ` +
      `resnet${options.encoder.depth} width ${options.encoder.width} (${options.encoder.stem} stem), ${options.epochs} epochs x ${stepsPerEpoch} steps, ` +
      `batch ${options.batchSize}, ${options.optimizer} lr ${options.lr}, ${getNumThreads()} threads, run dir ${options.runDir}`,
  );
  let interrupted = false;
  let lastLosses: number[] = [];
  try {
    let lossSums = new Array<number>(phases).fill(0);
    let lossCounts = 0;
    while (step < totalSteps) {
      const epoch = Math.floor(step / stepsPerEpoch);
      if (options.learning.schedule === "sequential") {
        const phase = phaseOfEpoch(epoch, options.epochs, phases);
        if (learner.phase !== phase) {
          learner.setPhase(phase);
          log(`sequential schedule: phase ${phase + 1}/${phases} trains stage ${learner.losses[phase].stage + 1}`);
        }
      }
      learner.train();
      const batch = await loader.next();
      const started = performance.now();
      const losses = scope(() => {
        let views = cat([batch.views[0], batch.views[1]]);
        if (options.channelsLast) views = views.channelsLast();
        optimizer.zeroGrad();
        const { lossValues } = learner.step(views);
        const bad = lossValues.findIndex((v, i) => !Number.isFinite(v) && (learner.phase === null || learner.phase === i));
        if (bad >= 0) {
          throw new Error(
            `training diverged: the loss at stage ${learner.losses[bad].stage + 1} is ${lossValues[bad]} at step ${step + 1}; ` +
              `the last checkpoint in ${options.runDir}/checkpoints is intact (lower --lr or raise --warmup-epochs)`,
          );
        }
        optimizer.step();
        return lossValues;
      });
      batch.dispose();
      scheduler.step();
      step++;
      const elapsed = (performance.now() - started) / 1000;
      trainSeconds += elapsed + batch.waitMs / 1000;
      waitSeconds += batch.waitMs / 1000;
      losses.forEach((v, i) => Number.isFinite(v) && (lossSums[i] += v));
      lossCounts++;
      lastLosses = losses;
      const imagesPerSecond = (step * options.batchSize) / Math.max(trainSeconds, 1e-9);
      const stepInEpoch = step - epoch * stepsPerEpoch;
      progress.update({
        epoch: epoch + 1,
        epochs: options.epochs,
        step: stepInEpoch,
        steps: stepsPerEpoch,
        losses,
        imagesPerSecond,
        dataWait: waitSeconds / Math.max(trainSeconds, 1e-9),
        etaSeconds: ((totalSteps - step) * options.batchSize) / imagesPerSecond,
      });
      if (step % 10 === 0 || stepInEpoch === stepsPerEpoch) {
        metric({ type: "step", step, epoch: epoch + 1, lr: scheduler.lrs[0], loss: losses, imagesPerSecond, dataWaitShare: waitSeconds / trainSeconds });
      }
      if (options.checkpointEvery > 0 && step % options.checkpointEvery === 0 && stepInEpoch !== stepsPerEpoch) writeCheckpoint();
      if (stepInEpoch === stepsPerEpoch) {
        const meanLoss = lossSums.map((s) => (lossCounts > 0 && s !== 0 ? s / lossCounts : NaN));
        const knn = (epoch + 1) % Math.max(1, options.knnEvery) === 0 ? knnMonitor() : null;
        progress.end();
        log(
          `epoch ${epoch + 1}/${options.epochs}: loss ${meanLoss.map((l) => (Number.isFinite(l) ? l.toFixed(4) : "-")).join(" ")}` +
            (knn === null ? "" : `  kNN top-1 ${(knn * 100).toFixed(2)}%`) +
            `  ${formatDuration(trainSeconds)} elapsed, data-wait ${((waitSeconds / trainSeconds) * 100).toFixed(1)}%`,
        );
        metric({ type: "epoch", epoch: epoch + 1, step, loss: meanLoss, knnTop1: knn, trainSeconds, dataWaitShare: waitSeconds / trainSeconds });
        writeCheckpoint();
        lossSums = new Array<number>(phases).fill(0);
        lossCounts = 0;
      }
      if (hooks.shouldStop?.()) {
        progress.end();
        const file = writeCheckpoint();
        log(`stopped at step ${step}: checkpoint ${file}`);
        interrupted = true;
        break;
      }
    }
  } finally {
    progress.end();
    await loader.close();
  }
  if (interrupted) {
    learner.dispose();
    encoder.dispose();
    optimizer.dispose();
    return { results: null, interrupted: true };
  }

  // ---- readout ----
  log("evaluating: linear readout on frozen features, kNN, baselines …");
  const readoutTrain = strided(trainLabelled, options.readoutTrainSize);
  const evaluate = (forward: (x: Tensor) => Tensor, modules: Module[]): EvaluateResult =>
    evaluateEncoder(
      forward,
      () => evalBatches(readoutTrain, 256, options.normalize),
      () => evalBatches(testSet, 256, options.normalize),
      {
        module: modules,
        numClasses: trainLabelled.numClasses,
        linear: { epochs: options.readoutEpochs, seed: options.seed },
        knn: { k: 200, temperature: 0.1 },
      },
    );
  const trained = evaluate(featureForward(encoder), [encoder]);
  const summary = (r: EvaluateResult): { top1: number; linear: { top1: number }; knn: { top1: number } } => ({
    top1: r.linear!.top1,
    linear: { top1: r.linear!.top1 },
    knn: { top1: r.knn!.top1 },
  });
  const results: Results = {
    method: options.method,
    dataset: options.trainData.name,
    encoder: `resnet${options.encoder.depth}-w${options.encoder.width}-${options.encoder.stem}`,
    epochs: options.epochs,
    linear: { top1: trained.linear!.top1, trainTop1: trained.linear!.trainTop1 },
    knn: { top1: trained.knn!.top1, k: 200 },
    baselines: {},
    training: {
      seconds: trainSeconds,
      steps: step,
      imagesPerSecond: (step * options.batchSize) / Math.max(trainSeconds, 1e-9),
      dataWaitShare: waitSeconds / Math.max(trainSeconds, 1e-9),
      finalLoss: lastLosses,
    },
    readout: {
      trainImages: readoutTrain.count,
      testImages: testSet.count,
      epochs: options.readoutEpochs,
      features: "global average pool of the last stage; no augmentation",
    },
  };
  if (options.perStage) {
    results.perStage = learner.stages.map((_, k) => {
      const r = evaluate(stageForward(learner.stages, k), [encoder]);
      return { stage: k + 1, linear: { top1: r.linear!.top1 }, knn: { top1: r.knn!.top1 } };
    });
  }
  for (const baseline of options.baselines) {
    if (baseline === "random-init") {
      const fresh = buildEncoder(options, trainSet.channels);
      results.baselines.randomInit = summary(evaluate(featureForward(fresh), [fresh]));
      fresh.dispose();
    } else if (baseline === "raw-pixels") {
      results.baselines.rawPixels = summary(evaluate(rawPixelsFeatures, []));
    } else if (baseline === "supervised") {
      const fresh = buildEncoder(options, trainSet.channels);
      // Supervised end to end on the readout split's labelled images (no augmentation).
      const supervised = trainSupervised(
        fresh,
        fresh.featureDim,
        trainLabelled.numClasses,
        () => evalBatches(readoutTrain, options.batchSize, options.normalize),
        { epochs: options.supervisedEpochs, seed: options.seed },
      );
      supervised.head.dispose();
      results.baselines.supervised = summary(evaluate(featureForward(fresh), [fresh]));
      fresh.dispose();
    }
  }
  writeJsonAtomic(path.join(options.runDir, "results.json"), results);
  metric({ type: "results", ...results });
  learner.dispose();
  encoder.dispose();
  optimizer.dispose();
  return { results, interrupted: false };
}

export { writeJsonAtomic };
