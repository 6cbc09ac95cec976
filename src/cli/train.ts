// `loco train`: options, their resolution into TrainOptions, signals, and the results table.
import * as fs from "node:fs";
import * as path from "node:path";
import { getNumThreads } from "../torch";
import { installInterruptHandler } from "../torch/signals";
import { DATASET_NAMES, type DatasetName, type DatasetSpec } from "../data/datasets";
import { BAD_IMAGE_POLICIES, type BadImagePolicy } from "../data/folder";
import {
  type AugmentConfig,
  type NormalizeConfig,
  CIFAR10_NORMALIZE,
  FASHION_MNIST_NORMALIZE,
  IMAGENET_NORMALIZE,
  MNIST_NORMALIZE,
  grayscale,
  simclrCifar,
  simclrImagenet,
} from "../data/augment";
import { METHOD_NAMES, type MethodName, methodPreset } from "../learning/methods";
import {
  NON_FINITE_ACTIONS,
  type NonFiniteAction,
  type TrainOptions,
  train,
  writeJsonAtomic,
} from "../learning/trainer";
import type { ResNetDepth, ResNetStem } from "../models/resnet";
import { type OptionSpec, UsageError } from "./options";
import { formatReport, parseBaselines } from "./report";

export const trainSpecs: OptionSpec[] = [
  {
    flag: "method",
    type: "enum",
    choices: METHOD_NAMES,
    default: "simclr",
    description: "preset: simclr (end to end), gim, loco",
  },
  { flag: "dataset", type: "enum", choices: DATASET_NAMES, default: "fashion-mnist", description: "dataset" },
  {
    flag: "data-dir",
    type: "string",
    description: "dataset folder",
    defaultText: "/usr/share/datasets/fashion-mnist for fashion-mnist",
  },
  { flag: "image-size", type: "int", min: 8, description: "image folder: resize to this size", defaultText: "96" },
  {
    flag: "readout-data-dir",
    type: "string",
    description: "image folder: labelled folder (train/ + val/ class folders) for the readout and kNN",
    defaultText: "--data-dir",
  },
  {
    flag: "on-bad-image",
    type: "enum",
    choices: BAD_IMAGE_POLICIES,
    default: "stop",
    description:
      "image folder: a file that is not a readable image stops the run, or is skipped (listed in bad-images.txt)",
  },
  {
    flag: "train-subset",
    type: "int",
    min: 0,
    default: 10000,
    description: "pretrain on a deterministic subset of this many images (0: all)",
  },
  {
    flag: "encoder",
    type: "enum",
    choices: ["resnet18", "resnet34", "resnet50"],
    default: "resnet18",
    description: "encoder",
  },
  { flag: "width", type: "int", min: 1, default: 16, description: "ResNet base width (64 is torchvision's)" },
  {
    flag: "stem",
    type: "enum",
    choices: ["cifar", "imagenet"],
    description: "ResNet stem",
    defaultText: "cifar below 96 px, else imagenet",
  },
  { flag: "epochs", type: "int", min: 1, default: 8, description: "pretraining epochs" },
  { flag: "batch-size", type: "int", min: 2, default: 128, description: "images per step (two views each)" },
  {
    flag: "optimizer",
    type: "enum",
    choices: ["lars", "sgd", "adam"],
    default: "lars",
    description: "optimizer (LARS as SimCLR, BN and bias excluded)",
  },
  {
    flag: "lr",
    type: "number",
    min: 0,
    description: "peak learning rate",
    defaultText: "lars 0.075 x sqrt(batch) (SimCLR's square-root scaling), sgd 0.3 x batch/256, adam 1e-3",
  },
  { flag: "weight-decay", type: "number", min: 0, default: 1e-6, description: "weight decay (not on BN and bias)" },
  { flag: "momentum", type: "number", min: 0, max: 1, default: 0.9, description: "momentum (lars, sgd)" },
  { flag: "warmup-epochs", type: "number", min: 0, default: 1, description: "linear warmup before the cosine decay" },
  {
    flag: "temperature",
    type: "number-list",
    min: 0,
    default: [0.5],
    description: "NT-Xent temperature (one, or one per loss stage)",
  },
  {
    flag: "loss-stages",
    type: "int-list",
    min: 1,
    description: "1-based stages with a loss",
    defaultText: "the method's: simclr 4; gim, loco 1,2,3,4",
  },
  {
    flag: "reach",
    type: "int-list",
    min: 0,
    description: "stages below its own a loss's gradient reaches (one, or one per loss)",
    defaultText: "simclr 3, gim 0, loco 1",
  },
  {
    flag: "conv-blocks",
    type: "int",
    min: 0,
    description: "residual blocks in each decoder (c)",
    defaultText: "simclr 0, gim 0, loco 1",
  },
  { flag: "mlp-layers", type: "int", min: 1, default: 2, description: "linear layers in each decoder's MLP (m)" },
  { flag: "head-bn", type: "boolean", default: true, description: "batch norm in the MLP head (--no-head-bn to drop)" },
  {
    flag: "schedule",
    type: "enum",
    choices: ["simultaneous", "sequential"],
    default: "simultaneous",
    description: "train all stages every step, or one phase per loss stage",
  },
  {
    flag: "augment",
    type: "enum",
    choices: ["auto", "grayscale", "simclr-cifar", "simclr-imagenet"],
    default: "auto",
    description: "augmentation preset (auto: by dataset)",
  },
  { flag: "seed", type: "int", min: 0, default: 0, description: "seed of init, data order and augmentations" },
  { flag: "threads", type: "int", min: 1, description: "libtorch threads", defaultText: "the machine's cores" },
  {
    flag: "workers",
    type: "int",
    min: 0,
    default: 1,
    description: "data worker threads (0: prepare batches on the main thread)",
  },
  { flag: "channels-last", type: "boolean", default: false, description: "run the encoder in channels-last layout" },
  { flag: "knn-every", type: "int", min: 0, default: 1, description: "kNN monitor every N epochs (0: off)" },
  {
    flag: "knn-train-size",
    type: "int",
    min: 0,
    default: 5000,
    description: "kNN monitor: train images in the memory bank (0: all)",
  },
  { flag: "knn-test-size", type: "int", min: 0, default: 2000, description: "kNN monitor: test images (0: all)" },
  {
    flag: "readout-epochs",
    type: "int",
    min: 1,
    default: 50,
    description: "linear readout: epochs over the cached features",
  },
  {
    flag: "readout-train-size",
    type: "int",
    min: 0,
    default: 10000,
    description: "linear readout: train images (0: all)",
  },
  {
    flag: "baselines",
    type: "string",
    default: "random-init",
    description: "comma-separated: random-init, supervised, raw-pixels (or none)",
  },
  { flag: "supervised-epochs", type: "int", min: 1, default: 10, description: "epochs of the supervised baseline" },
  { flag: "per-stage", type: "boolean", default: false, description: "also read out every stage's features" },
  { flag: "run-dir", type: "string", description: "run directory", defaultText: "runs/<method>-<dataset>-<time>" },
  {
    flag: "checkpoint-every",
    type: "int",
    min: 0,
    default: 0,
    description: "checkpoint every N steps (0: at epoch ends only)",
  },
  { flag: "keep-checkpoints", type: "int", min: 1, default: 3, description: "checkpoints kept" },
  { flag: "resume", type: "string", description: "continue the run in this directory from its newest good checkpoint" },
  {
    flag: "on-nonfinite",
    type: "enum",
    choices: NON_FINITE_ACTIONS,
    default: "stop",
    description: "a NaN/Inf loss or gradient: stop with a diagnosis, or skip the step",
  },
];

const DEFAULT_DIRS: Partial<Record<DatasetName, string>> = { "fashion-mnist": "/usr/share/datasets/fashion-mnist" };

function normalizationFor(dataset: DatasetName, channels: number): NormalizeConfig | null {
  switch (dataset) {
    case "fashion-mnist":
      return FASHION_MNIST_NORMALIZE;
    case "mnist":
      return MNIST_NORMALIZE;
    case "cifar10":
    case "cifar100":
      return CIFAR10_NORMALIZE;
    default:
      return channels === 3 ? IMAGENET_NORMALIZE : null;
  }
}

/** Turns parsed flags (or a saved config) into the trainer's options. */
export function resolveTrainOptions(v: Record<string, unknown>): TrainOptions {
  const method = v.method as MethodName;
  const dataset = v.dataset as DatasetName;
  const dir = (v.dataDir as string | undefined) ?? DEFAULT_DIRS[dataset];
  if (dir === undefined) throw new UsageError(`--data-dir: required for --dataset ${dataset}`);
  const imageSize = (v.imageSize as number | undefined) ?? 96;
  const nativeSize =
    dataset === "fashion-mnist" || dataset === "mnist"
      ? 28
      : dataset === "stl10"
        ? 96
        : dataset === "folder"
          ? imageSize
          : 32;
  const channels = dataset === "fashion-mnist" || dataset === "mnist" ? 1 : 3;
  const base: DatasetSpec = {
    name: dataset,
    dir,
    ...(dataset === "folder" ? { size: imageSize, onBadImage: v.onBadImage as BadImagePolicy } : {}),
  };
  const trainSubset = v.trainSubset as number;
  const subsetSpec = trainSubset > 0 ? { subset: { count: trainSubset, seed: v.seed as number } } : {};
  // STL-10 pretrains on its unlabeled images plus train; readout uses the labelled train split.
  // Image folders stream the pretraining images (decoded and cropped as they are loaded).
  const pretrainData: DatasetSpec = {
    ...base,
    split: dataset === "stl10" ? "train+unlabeled" : "train",
    ...(dataset === "folder" ? { stream: true } : {}),
    ...subsetSpec,
  };
  // Readout and kNN read the whole labelled train split (strided to their sizes), not the subset.
  // An unlabelled pretraining folder is read out on a labelled one (--readout-data-dir).
  const readoutDir = v.readoutDataDir as string | undefined;
  if (readoutDir !== undefined && dataset !== "folder")
    throw new UsageError(`--readout-data-dir: only for --dataset folder (${dataset} has its own labelled splits)`);
  const trainData: DatasetSpec = { ...base, dir: readoutDir ?? dir, split: "train" };
  const testData: DatasetSpec = { ...base, dir: readoutDir ?? dir, split: "test" };
  const normalize = normalizationFor(dataset, channels);
  const presetName =
    v.augment === "auto"
      ? channels === 1
        ? "grayscale"
        : nativeSize >= 96
          ? "simclr-imagenet"
          : "simclr-cifar"
      : (v.augment as string);
  const augment: AugmentConfig =
    presetName === "grayscale"
      ? grayscale(nativeSize, { normalize })
      : presetName === "simclr-imagenet"
        ? simclrImagenet(nativeSize, { normalize })
        : simclrCifar(nativeSize, { normalize });
  const preset = methodPreset(method, 4);
  const lossStages = (v.lossStages as number[] | undefined) ?? preset.lossStages;
  const reachList = v.reach as number[] | undefined;
  const temps = v.temperature as number[];
  const learning = {
    ...preset,
    lossStages,
    reach: reachList === undefined ? preset.reach : reachList.length === 1 ? reachList[0] : reachList,
    convBlocks: (v.convBlocks as number | undefined) ?? preset.convBlocks,
    mlpLayers: v.mlpLayers as number,
    headBN: v.headBn as boolean,
    temperature: temps.length === 1 ? temps[0] : temps,
    schedule: v.schedule as "simultaneous" | "sequential",
  };
  const optimizer = v.optimizer as "lars" | "sgd" | "adam";
  const batchSize = v.batchSize as number;
  const lr =
    (v.lr as number | undefined) ??
    (optimizer === "adam" ? 1e-3 : optimizer === "lars" ? 0.075 * Math.sqrt(batchSize) : (0.3 * batchSize) / 256);
  const baselines = parseBaselines(v.baselines as string);
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "");
  return {
    method,
    learning,
    pretrainData,
    trainData,
    testData,
    augment,
    normalize,
    encoder: {
      depth: Number(String(v.encoder).replace("resnet", "")) as ResNetDepth,
      width: v.width as number,
      stem: (v.stem as ResNetStem | undefined) ?? (nativeSize < 96 ? "cifar" : "imagenet"),
    },
    epochs: v.epochs as number,
    batchSize,
    optimizer,
    lr,
    weightDecay: v.weightDecay as number,
    momentum: v.momentum as number,
    warmupEpochs: v.warmupEpochs as number,
    seed: v.seed as number,
    threads: (v.threads as number | undefined) ?? getNumThreads(),
    workers: v.workers as number,
    channelsLast: v.channelsLast as boolean,
    knnEvery: v.knnEvery as number,
    knnTrainSize: v.knnTrainSize as number,
    knnTestSize: v.knnTestSize as number,
    readoutEpochs: v.readoutEpochs as number,
    readoutTrainSize: v.readoutTrainSize as number,
    baselines,
    supervisedEpochs: v.supervisedEpochs as number,
    perStage: v.perStage as boolean,
    runDir: (v.runDir as string | undefined) ?? path.join("runs", `${method}-${dataset}-${stamp}`),
    checkpointEvery: v.checkpointEvery as number,
    keepCheckpoints: v.keepCheckpoints as number,
    resume: false,
    onNonfinite: v.onNonfinite as NonFiniteAction,
  };
}

function checkRunDirWritable(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
    const probe = path.join(dir, `.write-probe-${process.pid}`);
    fs.writeFileSync(probe, "probe");
    fs.rmSync(probe);
  } catch (error) {
    throw new UsageError(`run directory ${dir} is not writable (${(error as Error).message})`);
  }
}

/** The resolved options as saved in config.json (JSON-able; resume reads them back). */
function savedConfig(options: TrainOptions, flags: Record<string, unknown>): Record<string, unknown> {
  return { flags, resolved: options };
}

export async function runTrain(values: Record<string, unknown>): Promise<void> {
  let options: TrainOptions;
  if (values.resume !== undefined) {
    const dir = values.resume as string;
    const file = path.join(dir, "config.json");
    if (!fs.existsSync(file)) throw new UsageError(`--resume: ${file} does not exist (not a loco run directory)`);
    let saved: { resolved: TrainOptions };
    try {
      saved = JSON.parse(fs.readFileSync(file, "utf8")) as { resolved: TrainOptions };
    } catch (error) {
      throw new UsageError(`--resume: ${file} is not valid JSON (${(error as Error).message})`);
    }
    options = { ...saved.resolved, runDir: dir, resume: true };
    if (values.threads !== undefined) options.threads = values.threads as number;
    if (values.onNonfinite !== undefined) options.onNonfinite = values.onNonfinite as NonFiniteAction;
  } else {
    options = resolveTrainOptions(values);
    if (fs.existsSync(path.join(options.runDir, "config.json"))) {
      throw new UsageError(
        `${options.runDir} already holds a run (use --resume ${options.runDir} to continue it, or another --run-dir)`,
      );
    }
  }
  checkRunDirWritable(options.runDir);
  if (!options.resume) writeJsonAtomic(path.join(options.runDir, "config.json"), savedConfig(options, values));

  // First Ctrl-C / SIGTERM: finish the step, checkpoint, exit non-zero. Second: exit at once, even
  // mid-step (a native handler: JS listeners would wait for the step to end); checkpoints are
  // renamed into place atomically, so the last complete one stays intact.
  const interrupts = installInterruptHandler(
    `finishing the current step and writing a checkpoint (press Ctrl-C again to exit at once; ` +
      `the last checkpoint in ${options.runDir}/checkpoints stays intact)\n`,
    `exiting now; the last complete checkpoint in ${options.runDir}/checkpoints is intact ` +
      `(continue with: loco train --resume ${options.runDir})\n`,
  );
  try {
    const outcome = await train(options, { shouldStop: () => interrupts.requested() });
    if (outcome.interrupted) {
      process.stderr.write(`interrupted; continue with: loco train --resume ${options.runDir}\n`);
      process.exitCode = 130;
      return;
    }
    const results = outcome.results!;
    console.log(
      formatReport(`${results.method} (${results.encoder}, ${results.epochs} epochs)`, results.dataset, results),
    );
    console.log(
      `training ${results.training.seconds.toFixed(0)} s, ${results.training.imagesPerSecond.toFixed(0)} img/s, ` +
        `data-wait ${(results.training.dataWaitShare * 100).toFixed(1)}%; results in ${path.join(options.runDir, "results.json")}`,
    );
  } finally {
    interrupts.dispose();
  }
}
