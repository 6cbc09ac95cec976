// Fine-tuning a run's encoder on a fraction of the labels (the semi-supervised protocol of SimCLR,
// arXiv:2002.05709, appendix B.5, that the SimCLR and LoCo papers report), and the same protocol
// from random initialisation (the "random init" baseline: a network trained with supervision on
// the labelled fraction only).
//
// Protocol: a class-balanced subset of round(fraction × N) labelled training images, chosen by
// `subsetSeed` (the same images for every method and for random init: compare like with like);
// the encoder unfrozen with a fresh Linear(featureDim, classes) head; cross-entropy; SGD with
// Nesterov momentum 0.9, no weight decay, no warmup, learning rate 0.05 × batch / 256 decayed by a
// cosine per step; random resized crop (area 0.08–1) and horizontal flip only; 60 epochs for 1% of
// the labels, 30 for 10% (the appendix's numbers; loco also uses 30 above 10%). Then top-1 of
// encoder + head, in eval mode, on the test split (resized, no augmentation). docs/methods.md lists
// each setting against appendix B.5 and the deliberate differences (batch size, subsets, BN, test crop).
// Every knob is an option. Batches come from the DataLoader (seeded order and augmentations; an
// image folder streams), so a fine-tuning run is a function of its options and the checkpoint.
import * as path from "node:path";
import { noGrad, scope } from "../torch";
import type { AugmentConfig, NormalizeConfig } from "../data/augment";
import type { ImageDataset } from "../data/dataset";
import { ResNet as ResNetModel, type ResNet } from "../models/resnet";
import type { Linear } from "../nn/layers";
import { type DatasetSpec, openDataset } from "../data/datasets";
import { subset } from "../data/dataset";
import { DataLoader } from "../data/loader";
import { type SupervisedEpoch, trainSupervised } from "../eval/baselines";
import { evalBatches, evalDataSpec } from "./readout";
import { buildRunEncoder } from "./encoders";
import type { TrainOptions } from "./options";
import { writeJsonAtomic } from "./rundir";
import { openRun, readRunConfig, runDirOf } from "./runs";

export interface FinetuneOptions {
  /** Fraction of the labelled training images, in (0, 1] (1%: 0.01). */
  fraction: number;
  /** Start from a freshly initialised encoder of the run's architecture instead of the checkpoint. */
  fromRandomInit?: boolean;
  /** Epochs (default: 60 at ≤ 1% of the labels, 30 above). */
  epochs?: number;
  /** Images per step (default: the run's batch size; the paper: 4096). */
  batchSize?: number;
  /** Peak learning rate (default 0.05 × batchSize / 256). */
  lr?: number;
  /** SGD momentum (default 0.9) and Nesterov (default true). */
  momentum?: number;
  nesterov?: boolean;
  /** Weight decay (default 0: the paper uses no regularisation). */
  weightDecay?: number;
  /** Linear warmup epochs before the cosine (default 0). */
  warmupEpochs?: number;
  /** Training augmentation (default: random resized crop, area cropScale, and flip 0.5 at the run's size). */
  augment?: AugmentConfig;
  /** Area range of the default random resized crop (default [0.08, 1]). */
  cropScale?: [number, number];
  /** Seed of the label subset (default 0). */
  subsetSeed?: number;
  /** Seed of the batch order, augmentations and head initialisation (default: the run's seed). */
  seed?: number;
  /** Data worker threads (default 1). */
  workers?: number;
  /** Write the result here (default RUN/finetune-<percent>[-random-init].json); null: do not write. */
  out?: string | null;
  log?: (message: string) => void;
}

export interface FinetuneResult {
  run: string;
  checkpoint: string | null;
  step: number | null;
  method: string;
  init: "pretrained" | "random";
  fraction: number;
  labelledImages: number;
  testImages: number;
  /** Top-1 of encoder + head on the test split. */
  top1: number;
  settings: {
    epochs: number;
    batchSize: number;
    lr: number;
    momentum: number;
    nesterov: boolean;
    weightDecay: number;
    warmupEpochs: number;
    augment: AugmentConfig;
    subsetSeed: number;
    seed: number;
  };
  history: SupervisedEpoch[];
  seconds: number;
}

function check(ok: boolean, message: string): void {
  if (!ok) throw new RangeError(`finetune: ${message}`);
}

/** The default epochs of the protocol for a label fraction. */
export function defaultFinetuneEpochs(fraction: number): number {
  return fraction <= 0.01 ? 60 : 30;
}

/** Fine-tunes a run's encoder (or a random one of its architecture) on a fraction of its labels. */
export async function finetune(target: string, options: FinetuneOptions): Promise<FinetuneResult> {
  const started = performance.now();
  const log = options.log ?? (() => {});
  const { fraction } = options;
  check(typeof fraction === "number" && fraction > 0 && fraction <= 1, `fraction must be in (0, 1], got ${fraction}`);
  const runDir = runDirOf(target);
  const config = readRunConfig(runDir);
  const settings = resolveSettings(options, config);
  // Image folders stream their training images (only the chosen fraction is ever decoded).
  const trainSpec: DatasetSpec = {
    ...config.trainData,
    ...(config.trainData.name === "folder" ? { stream: true } : {}),
  };
  const full = await openDataset(trainSpec, { log: (m) => log(`fine-tuning data: ${m}`) });
  const test = await openDataset(evalDataSpec(config.testData));
  if (full.labels === null) throw new Error(`${full.name}: fine-tuning needs labels`);
  const count = Math.max(full.numClasses, Math.round(fraction * full.count));
  const labelled = count >= full.count ? full : subset(full, { count, seed: settings.subsetSeed, balanced: true });
  check(
    labelled.count >= settings.batchSize,
    `batchSize ${settings.batchSize} exceeds the ${labelled.count} labelled images`,
  );
  const random = options.fromRandomInit ?? false;
  const loaded = random ? null : openRun(target, full.channels);
  const built = loaded?.encoder ?? buildRunEncoder(config, full.channels);
  if (!(built instanceof ResNetModel)) throw new Error(`${runDir}: fine-tuning needs a ResNet encoder`);
  const encoder = built;
  log(
    `fine-tuning ${random ? "a randomly initialised" : "the pretrained"} resnet${encoder.depth} on ${labelled.count} of ${full.count} labelled images ` +
      `(${(fraction * 100).toPrecision(3)}%), ${settings.epochs} epochs, batch ${settings.batchSize}, lr ${settings.lr.toPrecision(3)}`,
  );
  let loader: DataLoader | null = null;
  try {
    const data = new DataLoader(labelled, {
      batchSize: settings.batchSize,
      augment: settings.augment,
      views: 1,
      seed: settings.seed,
      workers: options.workers ?? 1,
    });
    loader = data;
    const result = await trainSupervised(
      encoder,
      encoder.featureDim,
      full.numClasses,
      () =>
        (async function* () {
          for await (const b of data.epochBatches()) {
            yield { images: b.views[0], labels: b.labels!, dispose: () => b.dispose() };
          }
        })(),
      {
        ...settings,
        stepsPerEpoch: data.batchesPerEpoch,
        disposeBatches: true,
        onEpoch: (e) =>
          log(
            `epoch ${e.epoch + 1}/${settings.epochs}: loss ${e.loss.toFixed(4)}, train top-1 ${(e.trainTop1 * 100).toFixed(1)}%`,
          ),
      },
    );
    const top1 = await testTop1(encoder, result.head, test, settings.batchSize, config.normalize, options.workers ?? 1);
    const out: FinetuneResult = {
      run: runDir,
      checkpoint: loaded?.checkpoint ?? null,
      step: loaded?.step ?? null,
      method: config.method,
      init: random ? "random" : "pretrained",
      fraction,
      labelledImages: labelled.count,
      testImages: test.count,
      top1,
      settings,
      history: result.history,
      seconds: (performance.now() - started) / 1000,
    };
    const file =
      options.out === undefined
        ? path.join(runDir, `finetune-${+(fraction * 100).toPrecision(3)}pct${random ? "-random-init" : ""}.json`)
        : options.out;
    if (file !== null) writeJsonAtomic(file, out);
    return out;
  } finally {
    await loader?.close();
    encoder.dispose();
  }
}

/** The protocol's settings: the options given, else SimCLR's recipe at the run's batch size and image size. */
function resolveSettings(options: FinetuneOptions, config: TrainOptions): FinetuneResult["settings"] {
  const epochs = options.epochs ?? defaultFinetuneEpochs(options.fraction);
  const batchSize = options.batchSize ?? config.batchSize;
  check(Number.isInteger(epochs) && epochs >= 1, `epochs must be a positive integer, got ${epochs}`);
  check(Number.isInteger(batchSize) && batchSize >= 1, `batchSize must be a positive integer, got ${batchSize}`);
  return {
    epochs,
    batchSize,
    lr: options.lr ?? (0.05 * batchSize) / 256,
    momentum: options.momentum ?? 0.9,
    nesterov: options.nesterov ?? true,
    weightDecay: options.weightDecay ?? 0,
    warmupEpochs: options.warmupEpochs ?? 0,
    augment: options.augment ?? {
      size: config.augment.size,
      crop: { scale: options.cropScale ?? [0.08, 1], ratio: [3 / 4, 4 / 3] },
      hflip: 0.5,
      normalize: config.normalize,
    },
    subsetSeed: options.subsetSeed ?? 0,
    seed: options.seed ?? config.seed,
  };
}

/** Top-1 of encoder + head (eval mode, no augmentation) on a labelled split; disposes the head. */
async function testTop1(
  encoder: ResNet,
  head: Linear,
  test: ImageDataset,
  batchSize: number,
  normalize: NormalizeConfig | null,
  workers: number,
): Promise<number> {
  let correct = 0;
  encoder.eval();
  head.eval();
  try {
    for await (const batch of evalBatches(test, batchSize, normalize, { workers })) {
      correct += scope(() =>
        noGrad(() => head.forward(encoder.forwardFeatures(batch.images)).argmax(1).eq(batch.labels).sum().item()),
      );
      batch.images.release();
      batch.labels.release();
    }
  } finally {
    head.dispose();
  }
  return correct / test.count;
}
