// The options of a training run, in one place: what a user gives (TrainInput: every field optional,
// named as the `loco train` flags in camelCase), the defaults, and their resolution into the
// trainer's complete TrainOptions. The CLI, config files, bench/ and library users all go through
// resolveTrainOptions.
import * as path from "node:path";
import { getNumThreads } from "../torch";
import { type AugmentConfig, type NormalizeConfig, grayscale, simclrCifar, simclrImagenet } from "../data/augment";
import { DATASET_NAMES, type DatasetName, type DatasetSpec } from "../data/datasets";
import { BAD_IMAGE_POLICIES, type BadImagePolicy } from "../data/folder";
import { datasetFacts } from "../data/registry";
import type { ResNetDepth, ResNetStem } from "../models/resnet";
import { TrainingError } from "./errors";
import type { EncoderFactory } from "./encoders";
import {
  FEEDBACK_MODES,
  type FeedbackMode,
  type LocalLearningConfig,
  METHOD_NAMES,
  type MethodName,
  methodPreset,
  resolveLosses,
  type SplitSpec,
} from "./methods";
import { OVERLAP_MODES, type Overlap } from "./router";
import { parseSplit, stageCountOf } from "./split";
import { STAGE_SCHEDULES, type StageSchedule } from "./stage-layout";
import { BASELINE_NAMES, type BaselineName } from "./readout";
import { DEFAULT_WEIGHT_DECAY_GRID } from "../eval/linear";

export type NonFiniteAction = "stop" | "skip";
export const NON_FINITE_ACTIONS: readonly NonFiniteAction[] = ["stop", "skip"];
export type OptimizerName = "lars" | "sgd" | "adam";
export const OPTIMIZER_NAMES: readonly OptimizerName[] = ["lars", "sgd", "adam"];
export type AugmentPreset = "auto" | "grayscale" | "simclr-cifar" | "simclr-imagenet";
export const AUGMENT_PRESETS: readonly AugmentPreset[] = ["auto", "grayscale", "simclr-cifar", "simclr-imagenet"];
export type ReadoutMode = "linear" | "none";
export const READOUT_MODES: readonly ReadoutMode[] = ["linear", "none"];
export type EncoderName = "resnet18" | "resnet34" | "resnet50";
export const ENCODER_NAMES: readonly EncoderName[] = ["resnet18", "resnet34", "resnet50"];
export type ScheduleName = LocalLearningConfig["schedule"];
/**
 * How a run uses several processes (ranks started by `loco launch`, docs/distributed.md): "none"
 * (one process), "data" (data parallel: each rank trains the whole model on its shard of every
 * global batch) or "stages" (stage parallel: each rank holds a group of stages).
 */
export type ParallelMode = "none" | "data" | "stages";
export const PARALLEL_MODES: readonly ParallelMode[] = ["none", "data", "stages"];

/** The complete, resolved options the trainer runs with (saved in config.json and every checkpoint). */
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
  /** Builds the encoder instead of the ResNet of `encoder` (not saved: pass it again on resume). */
  encoderFactory?: EncoderFactory;
  epochs: number;
  batchSize: number;
  optimizer: OptimizerName;
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
  /** "none": no readout at the end of training (results.json then holds the training figures only). */
  readout?: ReadoutMode;
  /** Linear readout: epochs over cached features, how many train and test images it reads (0: all). */
  readoutEpochs: number;
  /** Linear readout L2 weight decay: one value, or a grid to select from on held-out train features. */
  readoutWeightDecays: number[];
  readoutTrainSize: number;
  readoutTestSize?: number;
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
  /**
   * A NaN or infinite loss or gradient: "stop" (default) ends the run with a diagnosis and keeps
   * the last good checkpoint; "skip" drops that step (no update, batch-norm statistics restored)
   * with a warning, and stops only after MAX_CONSECUTIVE_SKIPS bad steps in a row.
   */
  onNonfinite?: NonFiniteAction;
  /**
   * "data": one of several ranks, each with `batchSize` images of every global batch of
   * batchSize × world size (absent in runs older than the option: "none").
   */
  parallel?: ParallelMode;
  /**
   * Stage parallel: "sync" (a rank waits for the message from the rank above before its update;
   * equals one process) or "pipelined" (it applies that message one step late). Absent in runs
   * older than the option: "sync".
   */
  stageSchedule?: StageSchedule;
}

/**
 * What a user gives: every field optional (defaults in TRAIN_DEFAULTS or derived from other
 * fields), named as the `loco train` flags in camelCase. `resume: DIR` continues the run in DIR
 * (its config.json defines the run; only threads, onNonfinite and encoderFactory are taken from
 * here).
 */
export interface TrainInput {
  method?: MethodName;
  dataset?: DatasetName;
  /** The dataset's folder (default: the dataset registry's, e.g. /usr/share/datasets/fashion-mnist). */
  dataDir?: string;
  /** Image folders: resize to this size (default 96). */
  imageSize?: number;
  /** Image folders: a file that is not a readable image stops the run (default), or is skipped and listed. */
  onBadImage?: BadImagePolicy;
  /** Image folders: a labelled folder for the readout and kNN (default: dataDir). */
  readoutDataDir?: string;
  /** Pretrain on a deterministic subset of this many images (0: all). */
  trainSubset?: number;
  encoder?: EncoderName;
  width?: number;
  /** Default: cifar below 96 px, else imagenet. */
  stem?: ResNetStem;
  encoderFactory?: EncoderFactory;
  epochs?: number;
  batchSize?: number;
  optimizer?: OptimizerName;
  /** Default: lars 0.075 x sqrt(batch), sgd 0.3 x batch/256, adam 1e-3. */
  lr?: number;
  weightDecay?: number;
  momentum?: number;
  warmupEpochs?: number;
  /** One, or one per loss stage. */
  temperature?: number | number[];
  /** Default: the method's (simclr 4; gim, loco 1,2,3,4). */
  lossStages?: number[];
  reach?: number | number[];
  convBlocks?: number;
  mlpLayers?: number;
  headBn?: boolean;
  schedule?: ScheduleName;
  /** Backward pass of conv and linear layers: exact backprop, or feedback alignment. */
  feedback?: FeedbackMode;
  /** Encoder stages K (default: 4, ResNet's own, or the split list's length + 1). */
  stages?: number;
  /** Where stages are cut: "resnet", "balanced-memory", "balanced-compute", or block indices ("4,8,14"). */
  split?: string | SplitSpec;
  /** A stage graph awaiting a message from a higher loss: keep it, or recompute it. */
  overlap?: Overlap;
  augment?: AugmentPreset;
  seed?: number;
  /** Default: the machine's cores. */
  threads?: number;
  workers?: number;
  channelsLast?: boolean;
  knnEvery?: number;
  knnTrainSize?: number;
  knnTestSize?: number;
  readout?: ReadoutMode;
  readoutEpochs?: number;
  readoutWeightDecays?: number[];
  readoutTrainSize?: number;
  readoutTestSize?: number;
  /** Names, or a comma-separated list ("none": no baselines). */
  baselines?: BaselineName[] | string;
  supervisedEpochs?: number;
  perStage?: boolean;
  /** Default: runs/<method>-<dataset>-<time>. */
  runDir?: string;
  checkpointEvery?: number;
  keepCheckpoints?: number;
  onNonfinite?: NonFiniteAction;
  /** Several processes: "data" (data parallel, under `loco launch`; batchSize is per rank), "stages". */
  parallel?: ParallelMode;
  /** With parallel "stages": "sync" (equals one process) or "pipelined" (messages applied one step late). */
  stageSchedule?: StageSchedule;
  /** A run directory to continue. */
  resume?: string;
}

/** The defaults of every field that has a fixed one (the others derive from other fields). */
export const TRAIN_DEFAULTS = {
  method: "simclr",
  dataset: "fashion-mnist",
  imageSize: 96,
  onBadImage: "stop",
  trainSubset: 0,
  encoder: "resnet18",
  width: 16,
  epochs: 3,
  batchSize: 128,
  optimizer: "lars",
  weightDecay: 1e-6,
  momentum: 0.9,
  warmupEpochs: 0.25,
  temperature: 0.2,
  mlpLayers: 2,
  headBn: true,
  schedule: "simultaneous",
  feedback: "backprop",
  split: "resnet",
  overlap: "retain",
  augment: "auto",
  seed: 0,
  workers: 1,
  channelsLast: false,
  knnEvery: 1,
  knnTrainSize: 5000,
  knnTestSize: 2000,
  readout: "linear",
  readoutEpochs: 100,
  readoutWeightDecays: [...DEFAULT_WEIGHT_DECAY_GRID],
  readoutTrainSize: 10000,
  readoutTestSize: 0,
  baselines: ["random-init", "raw-pixels"],
  supervisedEpochs: 10,
  perStage: false,
  checkpointEvery: 0,
  keepCheckpoints: 3,
  onNonfinite: "stop",
  parallel: "none",
  stageSchedule: "sync",
} as const satisfies Partial<Record<keyof TrainInput, unknown>>;

/** A usage mistake in the options (exit status 2 from the CLI). */
const invalid = (field: string, expected: string, got: unknown): TrainingError =>
  new TrainingError(`${field}: expected ${expected}, got ${JSON.stringify(got)}`, 2);

function oneOf<T extends string>(field: string, value: unknown, choices: readonly T[]): T {
  if (typeof value !== "string" || !(choices as readonly string[]).includes(value))
    throw invalid(field, `one of ${choices.join(", ")}`, value);
  return value as T;
}

function integer(field: string, value: unknown, min: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min)
    throw invalid(field, `an integer >= ${min}`, value);
  return value;
}

function number(field: string, value: unknown, min: number, max = Infinity): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max)
    throw invalid(field, `a number in [${min}, ${max}]`, value);
  return value;
}

function boolean(field: string, value: unknown): boolean {
  if (typeof value !== "boolean") throw invalid(field, "true or false", value);
  return value;
}

/** The readout's weight decays: a non-empty list of distinct non-negative numbers. */
function weightDecayGrid(value: unknown): number[] {
  const expected = "a non-empty list of distinct weight decays >= 0";
  if (!Array.isArray(value) || value.length === 0) throw invalid("readoutWeightDecays", expected, value);
  value.forEach((v, i) => number(`readoutWeightDecays[${i}]`, v, 0));
  if (new Set(value).size !== value.length) throw invalid("readoutWeightDecays", expected, value);
  return [...(value as number[])];
}

/** Baselines from names or a comma-separated list ("none" or empty: none). */
export function parseBaselines(value: readonly string[] | string | undefined): BaselineName[] {
  if (
    value !== undefined &&
    typeof value !== "string" &&
    !(Array.isArray(value) && value.every((v) => typeof v === "string"))
  ) {
    throw invalid("baselines", "a comma-separated list or a list of names", value);
  }
  const names =
    value === undefined
      ? []
      : typeof value === "string"
        ? value.trim() === "none" || value.trim() === ""
          ? []
          : value.split(",").map((s) => s.trim())
        : [...value];
  for (const n of names) {
    if (!BASELINE_NAMES.includes(n as BaselineName)) {
      throw new TrainingError(`baselines: unknown baseline '${n}' (expected ${BASELINE_NAMES.join(", ")} or none)`, 2);
    }
  }
  return names as BaselineName[];
}

/** The input with every default filled in: the form config.json keeps, and --config reads back. */
export function completeTrainInput(input: TrainInput): TrainInput & typeof TRAIN_DEFAULTS {
  const defined = Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined));
  return { ...TRAIN_DEFAULTS, ...defined } as TrainInput & typeof TRAIN_DEFAULTS;
}

/** The method's settings after the user's overrides (losses, reach, c, m, temperature, schedule). */
function resolveLearning(v: ReturnType<typeof completeTrainInput>, method: MethodName): LocalLearningConfig {
  let split: SplitSpec;
  try {
    split = typeof v.split === "string" ? parseSplit(v.split) : parseSplit(String(v.split));
  } catch (error) {
    throw new TrainingError(`split: ${(error as Error).message}`, 2);
  }
  const stages = v.stages === undefined ? undefined : integer("stages", v.stages, 1);
  const stageCount = stageCountOf({ stages, split }, 4);
  const preset = methodPreset(method, stageCount);
  const list = (field: string, value: unknown, min: number): number[] => {
    const items = Array.isArray(value) ? value : [value];
    if (items.length === 0) throw invalid(field, "one number or a list", value);
    return items.map((x) => number(field, x, min));
  };
  const lossStages = v.lossStages === undefined ? preset.lossStages : list("lossStages", v.lossStages, 1);
  const reach = v.reach === undefined ? preset.reach : list("reach", v.reach, 0);
  const temps = list("temperature", v.temperature, 0);
  if (temps.some((t) => t <= 0))
    throw invalid("temperature", "numbers > 0 (one, or one per loss stage)", v.temperature);
  return {
    ...preset,
    lossStages,
    reach: Array.isArray(reach) && reach.length === 1 ? reach[0] : reach,
    convBlocks: v.convBlocks === undefined ? preset.convBlocks : integer("convBlocks", v.convBlocks, 0),
    mlpLayers: integer("mlpLayers", v.mlpLayers, 1),
    headBN: boolean("headBn", v.headBn),
    temperature: temps.length === 1 ? temps[0] : temps,
    schedule: oneOf("schedule", v.schedule, ["simultaneous", "sequential"] as const),
    feedback: oneOf("feedback", v.feedback, FEEDBACK_MODES),
    // The stage count is the encoder's own unless the user or the split chose one (a custom
    // encoder's own count is known only once it is built).
    ...(stages !== undefined || split !== "resnet" ? { stages: stageCount } : {}),
    split,
    overlap: oneOf("overlap", v.overlap, OVERLAP_MODES),
  };
}

/** The data of a run: pretraining, readout and test splits, augmentation and normalisation. */
function resolveData(
  v: ReturnType<typeof completeTrainInput>,
  dataset: DatasetName,
  seed: number,
): Pick<TrainOptions, "pretrainData" | "trainData" | "testData" | "augment" | "normalize"> & { nativeSize: number } {
  const facts = datasetFacts(dataset);
  const dir = v.dataDir ?? facts.defaultDir;
  if (dir === undefined) throw new TrainingError(`dataDir: required for the dataset ${dataset}`, 2);
  const imageSize = integer("imageSize", v.imageSize, 8);
  const nativeSize = facts.nativeSize ?? imageSize;
  const onBadImage = oneOf("onBadImage", v.onBadImage, BAD_IMAGE_POLICIES);
  const base: DatasetSpec = { name: dataset, dir, ...(dataset === "folder" ? { size: imageSize, onBadImage } : {}) };
  // An unlabelled pretraining folder is read out on a labelled one (readoutDataDir).
  const readoutDir = v.readoutDataDir;
  if (readoutDir !== undefined && dataset !== "folder")
    throw new TrainingError(`readoutDataDir (--readout-data-dir): only for the folder dataset, not ${dataset}`, 2);
  const trainSubset = integer("trainSubset", v.trainSubset, 0);
  const normalize = facts.normalize;
  const augmentPreset = oneOf("augment", v.augment, AUGMENT_PRESETS);
  const presetName =
    augmentPreset === "auto"
      ? facts.channels === 1
        ? "grayscale"
        : nativeSize >= 96
          ? "simclr-imagenet"
          : "simclr-cifar"
      : augmentPreset;
  const augment =
    presetName === "grayscale"
      ? grayscale(nativeSize, { normalize })
      : presetName === "simclr-imagenet"
        ? simclrImagenet(nativeSize, { normalize })
        : simclrCifar(nativeSize, { normalize });
  return {
    nativeSize,
    pretrainData: {
      ...base,
      split: facts.pretrainSplit,
      // Image folders stream the pretraining images (decoded and cropped as they are loaded).
      ...(dataset === "folder" ? { stream: true } : {}),
      ...(trainSubset > 0 ? { subset: { count: trainSubset, seed } } : {}),
    },
    // Readout and kNN read the whole labelled train split (strided to their sizes), not the subset.
    trainData: { ...base, dir: readoutDir ?? dir, split: "train" },
    testData: { ...base, dir: readoutDir ?? dir, split: "test" },
    augment,
    normalize,
  };
}

/**
 * Turns a user's input (flags, a config file, a library call) into the trainer's complete
 * options. Throws a TrainingError (exit status 2) naming the field for an invalid value. Does not
 * look at the disk (resume is handled by `train`).
 */
export function resolveTrainOptions(input: TrainInput): TrainOptions {
  const v = completeTrainInput(input);
  const method = oneOf("method", v.method, METHOD_NAMES);
  const dataset = oneOf("dataset", v.dataset, DATASET_NAMES);
  const seed = integer("seed", v.seed, 0);
  const { nativeSize, ...data } = resolveData(v, dataset, seed);
  const optimizer = oneOf("optimizer", v.optimizer, OPTIMIZER_NAMES);
  const batchSize = integer("batchSize", v.batchSize, 2);
  const parallel = oneOf("parallel", v.parallel, PARALLEL_MODES);
  // The default learning rate follows the batch of one optimizer step: the global one when data parallel.
  const stepBatch = batchSize * (parallel === "data" ? launchedWorldSize() : 1);
  const lr =
    v.lr !== undefined
      ? number("lr", v.lr, 0)
      : optimizer === "adam"
        ? 1e-3
        : optimizer === "lars"
          ? 0.075 * Math.sqrt(stepBatch)
          : (0.3 * stepBatch) / 256;
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "");
  const encoderName = oneOf("encoder", v.encoder, ENCODER_NAMES);
  const learning = resolveLearning(v, method);
  const stageSchedule = oneOf("stageSchedule", v.stageSchedule, STAGE_SCHEDULES);
  checkParallelSettings(parallel, stageSchedule, learning.overlap ?? "retain");
  if (v.encoderFactory === undefined) {
    // A loss at stage 9, a stage listed twice or a temperature list of the wrong length is a usage
    // error here, before anything is written (a custom encoder's stages are known only once built).
    const stageCount = learning.stages ?? 4;
    try {
      resolveLosses(learning, stageCount);
    } catch (error) {
      throw new TrainingError(`${(error as Error).message} (the encoder has ${stageCount} stages)`, 2);
    }
  }
  return {
    method,
    learning,
    ...data,
    encoder: {
      depth: Number(encoderName.replace("resnet", "")) as ResNetDepth,
      width: integer("width", v.width, 1),
      stem:
        v.stem === undefined ? (nativeSize < 96 ? "cifar" : "imagenet") : oneOf("stem", v.stem, ["cifar", "imagenet"]),
    },
    ...(v.encoderFactory === undefined ? {} : { encoderFactory: v.encoderFactory }),
    epochs: integer("epochs", v.epochs, 1),
    batchSize,
    optimizer,
    lr,
    weightDecay: number("weightDecay", v.weightDecay, 0),
    momentum: number("momentum", v.momentum, 0, 1),
    warmupEpochs: number("warmupEpochs", v.warmupEpochs, 0),
    seed,
    threads: v.threads === undefined ? getNumThreads() : integer("threads", v.threads, 1),
    workers: integer("workers", v.workers, 0),
    channelsLast: boolean("channelsLast", v.channelsLast),
    knnEvery: integer("knnEvery", v.knnEvery, 0),
    knnTrainSize: integer("knnTrainSize", v.knnTrainSize, 0),
    knnTestSize: integer("knnTestSize", v.knnTestSize, 0),
    readout: oneOf("readout", v.readout, READOUT_MODES),
    readoutEpochs: integer("readoutEpochs", v.readoutEpochs, 1),
    readoutWeightDecays: weightDecayGrid(v.readoutWeightDecays),
    readoutTrainSize: integer("readoutTrainSize", v.readoutTrainSize, 0),
    readoutTestSize: integer("readoutTestSize", v.readoutTestSize, 0),
    baselines: parseBaselines(v.baselines),
    supervisedEpochs: integer("supervisedEpochs", v.supervisedEpochs, 1),
    perStage: boolean("perStage", v.perStage),
    runDir: v.runDir ?? path.join("runs", `${method}-${dataset}-${stamp}`),
    checkpointEvery: integer("checkpointEvery", v.checkpointEvery, 0),
    keepCheckpoints: integer("keepCheckpoints", v.keepCheckpoints, 1),
    resume: false,
    onNonfinite: oneOf("onNonfinite", v.onNonfinite, NON_FINITE_ACTIONS),
    parallel,
    stageSchedule,
  };
}

/**
 * Settings that only one parallel mode uses are refused elsewhere rather than ignored: a user who
 * asks for recomputation or a pipelined schedule must not get a run that silently does neither.
 */
function checkParallelSettings(parallel: ParallelMode, stageSchedule: StageSchedule, overlap: Overlap): void {
  if (parallel === "stages" && overlap !== "retain") {
    throw new TrainingError(
      `overlap (--overlap ${overlap}): stage parallel training keeps each rank's stage graphs (retain); the recompute modes are for one process or --parallel data`,
      2,
    );
  }
  if (parallel !== "stages" && stageSchedule !== "sync") {
    throw new TrainingError(
      `stageSchedule (--stage-schedule ${stageSchedule}): only with --parallel stages (this run is ${parallel === "none" ? "one process" : `--parallel ${parallel}`})`,
      2,
    );
  }
}

/** $WORLD_SIZE as `loco launch` sets it (1 when unset or malformed: the rendezvous reports that). */
function launchedWorldSize(): number {
  const n = Number(process.env.WORLD_SIZE);
  return Number.isInteger(n) && n >= 1 ? n : 1;
}

/**
 * The method's full settings in one line, e.g. "loco (losses 1,2,3,4, reach 1, c 1, m 2,
 * simultaneous)": what tables and results.json name a run by.
 */
export function describeMethod(method: MethodName, learning: LocalLearningConfig): string {
  const reach = Array.isArray(learning.reach) ? learning.reach.join(",") : String(learning.reach);
  const temperature = Array.isArray(learning.temperature)
    ? learning.temperature.join(",")
    : String(learning.temperature);
  return (
    `${method} (losses ${learning.lossStages.join(",")}, reach ${reach}, c ${learning.convBlocks}, ` +
    `m ${learning.mlpLayers}${learning.headBN ? "" : " no head BN"}, t ${temperature}, ${learning.schedule}` +
    `${learning.feedback === "alignment" ? ", feedback alignment" : ""})`
  );
}

function object(field: string, value: unknown): Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw invalid(field, "an object", value);
  return value as Record<string, unknown>;
}

function string(field: string, value: unknown): string {
  if (typeof value !== "string" || value === "") throw invalid(field, "a non-empty string", value);
  return value;
}

function numberList(field: string, value: unknown, min: number): void {
  const items = Array.isArray(value) ? value : [value];
  if (items.length === 0) throw invalid(field, "one number or a list", value);
  for (const x of items) number(field, x, min);
}

/**
 * Checks the resolved options a run saved (config.json's `resolved`, read back on resume and by
 * `loco eval`): every field the trainer reads has its type and range, so that an edited or damaged
 * file is a usage error naming the field (`resolved.epochs`), not a TypeError or a NaN later on.
 */
export function checkResolvedOptions(value: unknown): TrainOptions {
  const o = object("resolved", value);
  if (Object.keys(o).length === 0) throw invalid("resolved", "the run's resolved options", value);
  const f = (name: string): string => `resolved.${name}`;
  oneOf(f("method"), o.method, METHOD_NAMES);
  const learning = object(f("learning"), o.learning);
  const stages = learning.lossStages;
  if (!Array.isArray(stages) || stages.length === 0)
    throw invalid(f("learning.lossStages"), "a list of stages", stages);
  for (const s of stages) integer(f("learning.lossStages"), s, 0);
  numberList(f("learning.temperature"), learning.temperature, Number.MIN_VALUE);
  numberList(f("learning.reach"), learning.reach, 0);
  integer(f("learning.convBlocks"), learning.convBlocks, 0);
  integer(f("learning.mlpLayers"), learning.mlpLayers, 1);
  boolean(f("learning.headBN"), learning.headBN);
  oneOf(f("learning.schedule"), learning.schedule, ["simultaneous", "sequential"] as const);
  for (const split of ["pretrainData", "trainData", "testData"]) {
    const spec = object(f(split), o[split]);
    oneOf(f(`${split}.name`), spec.name, DATASET_NAMES);
    string(f(`${split}.dir`), spec.dir);
  }
  object(f("augment"), o.augment);
  const encoder = object(f("encoder"), o.encoder);
  oneOf(f("encoder.depth"), String(encoder.depth), ["18", "34", "50"] as const);
  integer(f("encoder.width"), encoder.width, 1);
  oneOf(f("encoder.stem"), encoder.stem, ["cifar", "imagenet"] as const);
  const integers: [keyof TrainOptions, number][] = [
    ["epochs", 1],
    ["batchSize", 2],
    ["seed", 0],
    ["threads", 1],
    ["workers", 0],
    ["knnEvery", 0],
    ["knnTrainSize", 0],
    ["knnTestSize", 0],
    ["readoutEpochs", 1],
    ["readoutTrainSize", 0],
    ["supervisedEpochs", 1],
    ["checkpointEvery", 0],
    ["keepCheckpoints", 1],
  ];
  for (const [name, min] of integers) integer(f(name), o[name], min);
  if (o.readoutTestSize !== undefined) integer(f("readoutTestSize"), o.readoutTestSize, 0);
  oneOf(f("optimizer"), o.optimizer, OPTIMIZER_NAMES);
  number(f("lr"), o.lr, 0);
  number(f("weightDecay"), o.weightDecay, 0);
  number(f("momentum"), o.momentum, 0, 1);
  number(f("warmupEpochs"), o.warmupEpochs, 0);
  boolean(f("channelsLast"), o.channelsLast);
  boolean(f("perStage"), o.perStage);
  if (o.readout !== undefined) oneOf(f("readout"), o.readout, READOUT_MODES);
  if (o.onNonfinite !== undefined) oneOf(f("onNonfinite"), o.onNonfinite, NON_FINITE_ACTIONS);
  if (o.parallel !== undefined) oneOf(f("parallel"), o.parallel, PARALLEL_MODES);
  if (o.stageSchedule !== undefined) oneOf(f("stageSchedule"), o.stageSchedule, STAGE_SCHEDULES);
  if (!Array.isArray(o.baselines)) throw invalid(f("baselines"), "a list of baselines", o.baselines);
  parseBaselines(o.baselines as string[]);
  return o as unknown as TrainOptions;
}
