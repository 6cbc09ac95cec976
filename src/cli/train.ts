// `loco train`: its flags (defaults from learning/options.ts), Ctrl-C handling, and the results table.
import * as path from "node:path";
import { installInterruptHandler } from "../torch/signals";
import { DATASET_NAMES } from "../data/datasets";
import { FEEDBACK_MODES, METHOD_NAMES } from "../learning/methods";
import {
  AUGMENT_PRESETS,
  ENCODER_NAMES,
  NON_FINITE_ACTIONS,
  OPTIMIZER_NAMES,
  PARALLEL_MODES,
  READOUT_MODES,
  TRAIN_DEFAULTS,
  type TrainInput,
  resolveTrainOptions,
} from "../learning/options";
import { STAGE_SCHEDULES } from "../learning/stage-layout";
import { train } from "../learning/trainer";
import { OVERLAP_MODES } from "../learning/router";
import { type OptionSpec, withFlagNames } from "./options";
import { formatReport } from "./report";

export const trainSpecs: OptionSpec[] = [
  {
    flag: "method",
    type: "enum",
    choices: METHOD_NAMES,
    default: TRAIN_DEFAULTS.method,
    description: "preset: simclr (end to end), gim, loco",
  },
  { flag: "dataset", type: "enum", choices: DATASET_NAMES, default: TRAIN_DEFAULTS.dataset, description: "dataset" },
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
    choices: ["stop", "skip"],
    description:
      "image folder: a file that is not a readable image stops the run, or is skipped (listed in bad-images.txt)",
    defaultText: "stop",
  },
  {
    flag: "train-subset",
    type: "int",
    min: 0,
    default: TRAIN_DEFAULTS.trainSubset,
    description: "pretrain on a deterministic subset of this many images (0: all)",
  },
  {
    flag: "encoder",
    type: "enum",
    choices: ENCODER_NAMES,
    default: TRAIN_DEFAULTS.encoder,
    description: "encoder",
  },
  {
    flag: "width",
    type: "int",
    min: 1,
    default: TRAIN_DEFAULTS.width,
    description: "ResNet base width (64 is torchvision's)",
  },
  {
    flag: "stem",
    type: "enum",
    choices: ["cifar", "imagenet"],
    description: "ResNet stem",
    defaultText: "cifar below 96 px, else imagenet",
  },
  { flag: "epochs", type: "int", min: 1, default: TRAIN_DEFAULTS.epochs, description: "pretraining epochs" },
  {
    flag: "batch-size",
    type: "int",
    min: 2,
    default: TRAIN_DEFAULTS.batchSize,
    description: "images per step (two views each); with --parallel data, per rank (a step: ranks x this)",
  },
  {
    flag: "optimizer",
    type: "enum",
    choices: OPTIMIZER_NAMES,
    default: TRAIN_DEFAULTS.optimizer,
    description: "optimizer (LARS as SimCLR, BN and bias excluded)",
  },
  {
    flag: "lr",
    type: "number",
    min: 0,
    description: "peak learning rate",
    defaultText: "lars 0.075 x sqrt(batch) (SimCLR's square-root scaling), sgd 0.3 x batch/256, adam 1e-3",
  },
  {
    flag: "weight-decay",
    type: "number",
    min: 0,
    default: TRAIN_DEFAULTS.weightDecay,
    description: "weight decay (not on BN and bias)",
  },
  {
    flag: "momentum",
    type: "number",
    min: 0,
    max: 1,
    default: TRAIN_DEFAULTS.momentum,
    description: "momentum (lars, sgd)",
  },
  {
    flag: "warmup-epochs",
    type: "number",
    min: 0,
    default: TRAIN_DEFAULTS.warmupEpochs,
    description: "linear warmup before the cosine decay",
  },
  {
    flag: "temperature",
    type: "number-list",
    min: 0,
    default: [TRAIN_DEFAULTS.temperature],
    description: "NT-Xent temperature (one, or one per loss stage)",
  },
  {
    flag: "loss-stages",
    type: "int-list",
    min: 1,
    description: "1-based stages with a loss",
    defaultText: "the method's: simclr K; gim, loco 1,...,K",
  },
  {
    flag: "reach",
    type: "int-list",
    min: 0,
    description: "stages below its own a loss's gradient reaches (one, or one per loss)",
    defaultText: "simclr K-1, gim 0, loco 1",
  },
  {
    flag: "conv-blocks",
    type: "int",
    min: 0,
    description: "residual blocks in each decoder (c)",
    defaultText: "simclr 0, gim 0, loco 1",
  },
  {
    flag: "mlp-layers",
    type: "int",
    min: 1,
    default: TRAIN_DEFAULTS.mlpLayers,
    description: "linear layers in each decoder's MLP (m)",
  },
  {
    flag: "head-bn",
    type: "boolean",
    default: TRAIN_DEFAULTS.headBn,
    description: "batch norm in the MLP head (--no-head-bn to drop)",
  },
  {
    flag: "stages",
    type: "int",
    min: 1,
    description: "encoder stages K, cut at block boundaries by --split",
    defaultText: "4 (ResNet's own), or the --split list's length + 1",
  },
  {
    flag: "split",
    type: "string",
    default: TRAIN_DEFAULTS.split,
    description:
      "where stages are cut: resnet (ResNet's four), balanced-memory, balanced-compute (K groups of blocks with the least largest activation bytes or FLOPs), or block indices where stages 2..K begin (e.g. 4,8,14)",
  },
  {
    flag: "overlap",
    type: "enum",
    choices: OVERLAP_MODES,
    default: TRAIN_DEFAULTS.overlap,
    description:
      "a stage graph awaiting a message from a higher loss: keep it, or free it and recompute the stage (less memory, same gradients); recompute-all: every stage pass recomputes its stage, so no stage graph is alive beside a decoder's (one extra forward per pass); recompute-min: recompute-all, and a pass holds nothing of the stages above it (least memory; LoCo: two more forwards per stage). One process or --parallel data; --parallel stages keeps its graphs (retain)",
  },
  {
    flag: "schedule",
    type: "enum",
    choices: ["simultaneous", "sequential"],
    default: TRAIN_DEFAULTS.schedule,
    description: "train all stages every step, or one phase per loss stage",
  },
  {
    flag: "feedback",
    type: "enum",
    choices: FEEDBACK_MODES,
    default: TRAIN_DEFAULTS.feedback,
    description:
      "backward pass of conv and linear layers: backprop, or alignment (fixed random feedback matrices, Lillicrap et al. 2016; BN and loss exact)",
  },
  {
    flag: "augment",
    type: "enum",
    choices: AUGMENT_PRESETS,
    default: TRAIN_DEFAULTS.augment,
    description: "augmentation preset (auto: by dataset)",
  },
  {
    flag: "seed",
    type: "int",
    min: 0,
    default: TRAIN_DEFAULTS.seed,
    description: "seed of init, data order and augmentations",
  },
  { flag: "threads", type: "int", min: 1, description: "libtorch threads", defaultText: "the machine's cores" },
  {
    flag: "workers",
    type: "int",
    min: 0,
    default: TRAIN_DEFAULTS.workers,
    description: "data worker threads (0: prepare batches on the main thread)",
  },
  {
    flag: "channels-last",
    type: "boolean",
    default: TRAIN_DEFAULTS.channelsLast,
    description: "run the encoder in channels-last layout (a ResNet's layer4 stays NCHW, faster at its small maps)",
  },
  {
    flag: "knn-every",
    type: "int",
    min: 0,
    default: TRAIN_DEFAULTS.knnEvery,
    description: "kNN monitor every N epochs (0: off)",
  },
  {
    flag: "knn-train-size",
    type: "int",
    min: 0,
    default: TRAIN_DEFAULTS.knnTrainSize,
    description: "kNN monitor: train images in the memory bank (0: all)",
  },
  {
    flag: "knn-test-size",
    type: "int",
    min: 0,
    default: TRAIN_DEFAULTS.knnTestSize,
    description: "kNN monitor: test images (0: all)",
  },
  {
    flag: "readout-epochs",
    type: "int",
    min: 1,
    default: TRAIN_DEFAULTS.readoutEpochs,
    description: "linear readout: epochs over the cached features",
  },
  {
    flag: "readout-weight-decays",
    type: "number-list",
    min: 0,
    default: TRAIN_DEFAULTS.readoutWeightDecays,
    description:
      "linear readout L2 weight decay: one value, or a grid from which each encoder (baselines too) gets the best on 20% of its train features held out",
  },
  {
    flag: "readout-train-size",
    type: "int",
    min: 0,
    default: TRAIN_DEFAULTS.readoutTrainSize,
    description: "linear readout: train images (0: all)",
  },
  {
    flag: "readout",
    type: "enum",
    choices: READOUT_MODES,
    default: TRAIN_DEFAULTS.readout,
    description: "after training: linear readout and kNN beside the baselines, or none",
  },
  {
    flag: "readout-test-size",
    type: "int",
    min: 0,
    default: TRAIN_DEFAULTS.readoutTestSize,
    description: "linear readout: test images (0: all)",
  },
  {
    flag: "baselines",
    type: "string",
    default: TRAIN_DEFAULTS.baselines.join(","),
    description: "comma-separated: random-init, supervised, raw-pixels (or none); read out as the encoder",
  },
  {
    flag: "supervised-epochs",
    type: "int",
    min: 1,
    default: TRAIN_DEFAULTS.supervisedEpochs,
    description: "epochs of the supervised baseline",
  },
  {
    flag: "per-stage",
    type: "boolean",
    default: TRAIN_DEFAULTS.perStage,
    description: "also read out every stage's features",
  },
  { flag: "run-dir", type: "string", description: "run directory", defaultText: "runs/<method>-<dataset>-<time>" },
  {
    flag: "checkpoint-every",
    type: "int",
    min: 0,
    default: TRAIN_DEFAULTS.checkpointEvery,
    description: "checkpoint every N steps (0: at epoch ends only)",
  },
  {
    flag: "keep-checkpoints",
    type: "int",
    min: 1,
    default: TRAIN_DEFAULTS.keepCheckpoints,
    description: "checkpoints kept",
  },
  {
    flag: "resume",
    type: "string",
    description:
      "continue the run in this directory from its newest good checkpoint (flags that define the run must match it; epochs, lr, the monitor, readout and checkpoint settings may change)",
  },
  {
    flag: "on-nonfinite",
    type: "enum",
    choices: NON_FINITE_ACTIONS,
    default: TRAIN_DEFAULTS.onNonfinite,
    description: "a NaN/Inf loss or gradient: stop with a diagnosis, or skip the step",
  },
  {
    flag: "parallel",
    type: "enum",
    choices: PARALLEL_MODES,
    default: TRAIN_DEFAULTS.parallel,
    description:
      "several processes, started by `loco launch --nproc N -- train --parallel data|stages ...`: data (each rank trains the model on its --batch-size images of every global batch of N x --batch-size; SyncBatchNorm, NT-Xent over the global batch, gradients averaged), stages (each rank trains a contiguous group of stages and their decoders on every batch of --batch-size, activations sent up and the router's messages down; rank 0 reads the data); rank 0 writes the run directory and reads out",
  },
  {
    flag: "stage-schedule",
    type: "enum",
    choices: STAGE_SCHEDULES,
    default: TRAIN_DEFAULTS.stageSchedule,
    description:
      "--parallel stages: sync (a rank waits for the rank above's message before its update; equals one process) or pipelined (LoCo: it goes on and applies that message one step late)",
  },
];

/** The camelCase flag values as the library's input (the flags are named as its fields). */
function trainInput(values: Record<string, unknown>): TrainInput {
  return values as TrainInput;
}

export async function runTrain(
  values: Record<string, unknown>,
  _positionals: string[] = [],
  given: ReadonlySet<string> = new Set(Object.keys(values)),
): Promise<void> {
  const resume = values.resume as string | undefined;
  // Resolved here once only to name the run directory in the interrupt messages (train resolves again).
  const runDir = resume ?? withFlagNames(() => resolveTrainOptions(trainInput(values))).runDir;
  // On resume only the flags given count (the run's config.json holds the rest; conflicts are refused).
  const input: TrainInput =
    resume === undefined
      ? { ...trainInput(values), runDir }
      : { ...trainInput(Object.fromEntries([...given].map((k) => [k, values[k]]))), resume, runDir };
  // First Ctrl-C / SIGTERM: finish the step, checkpoint, exit non-zero. Second: exit at once, even
  // mid-step (a native handler: JS listeners would wait for the step to end); checkpoints are
  // renamed into place atomically, so the last complete one stays intact.
  const interrupts = installInterruptHandler(
    `finishing the current step and writing a checkpoint (press Ctrl-C again to exit at once; ` +
      `the last checkpoint in ${runDir}/checkpoints stays intact)\n`,
    `exiting now; the last complete checkpoint in ${runDir}/checkpoints is intact ` +
      `(continue with: loco train --resume ${runDir})\n`,
  );
  try {
    const outcome = await train(input, { shouldStop: () => interrupts.requested() });
    if (outcome.interrupted) {
      process.stderr.write(`interrupted; continue with: loco train --resume ${runDir}\n`);
      process.exitCode = 130;
      return;
    }
    // Data parallel: ranks other than 0 train, then leave the readout and the report to rank 0.
    if (outcome.results === null) return;
    const results = outcome.results;
    const title = `${results.methodSettings}, ${results.encoder}, ${results.epochs} epochs`;
    console.log(formatReport(title, results.dataset, results));
    console.log(
      `training ${results.training.seconds.toFixed(0)} s, ${results.training.imagesPerSecond.toFixed(0)} img/s, ` +
        `data-wait ${(results.training.dataWaitShare * 100).toFixed(1)}%; results in ${path.join(runDir, "results.json")}`,
    );
  } finally {
    interrupts.dispose();
  }
}
