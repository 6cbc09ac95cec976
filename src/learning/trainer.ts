// The trainer: pretrain an encoder with SimCLR end to end, GIM or LoCo (any configuration of the
// router), monitor it with kNN every epoch, read it out with the linear protocol against the
// baselines, and keep everything in a run directory.
import * as fs from "node:fs";
import * as path from "node:path";
import {
  type Tensor,
  cat,
  defaultGenerator,
  getNumThreads,
  manualSeed,
  noGrad,
  scope,
  setNumThreads,
  stack,
} from "../torch";
import { Generator } from "../torch/random";
import { ResNet, type ResNetDepth, type ResNetStem } from "../models/resnet";
import { LARS, excludeBiasAndNorm } from "../optim/lars";
import { SGD } from "../optim/sgd";
import { Adam } from "../optim/adam";
import { LRScheduler, LinearWarmupCosine } from "../optim/schedule";
import { type AugmentConfig, type NormalizeConfig } from "../data/augment";
import type { ImageDataset } from "../data/dataset";
import { type DatasetSpec, openDataset } from "../data/datasets";
import { DataLoader } from "../data/loader";
import { bytesPerElement } from "../torch/dtype";
import { Progress, formatDuration } from "../report/progress";
import { LocalLearner } from "./learner";
import { type BaselineName, type ReadoutReport, knnMonitor, readoutReport, strided } from "./readout";
import { buildRunEncoder } from "./runs";

type AnyOptimizer = LARS | SGD | Adam;
import type { LocalLearningConfig, MethodName } from "./methods";
import {
  type CheckpointMeta,
  CHECKPOINT_FORMAT,
  checkpointDir,
  listCheckpoints,
  loadLatestCheckpoint,
  removeStaleTemporaries,
  saveCheckpoint,
} from "./checkpoint";

export { BASELINE_NAMES } from "./readout";
export type { BaselineName };

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
  /**
   * A NaN or infinite loss or gradient: "stop" (default) ends the run with a diagnosis and keeps
   * the last good checkpoint; "skip" drops that step (no update, batch-norm statistics restored)
   * with a warning, and stops only after MAX_CONSECUTIVE_SKIPS bad steps in a row.
   */
  onNonfinite?: NonFiniteAction;
}

export type NonFiniteAction = "stop" | "skip";
export const NON_FINITE_ACTIONS: readonly NonFiniteAction[] = ["stop", "skip"];
/** With onNonfinite "skip": this many non-finite steps in a row stop the run (the weights themselves are gone). */
export const MAX_CONSECUTIVE_SKIPS = 10;

/**
 * An error the user caused or can act on (bad run directory, full disk, divergence): the CLI
 * prints its message without a stack trace and exits with `exitCode`.
 */
export class TrainingError extends Error {
  override name = "TrainingError";
  readonly userFacing = true;
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/** Where and how a run diverged. */
export interface Divergence {
  /** The optimizer step (1-based) that produced it. */
  step: number;
  epoch: number;
  /** 1-based encoder stage. */
  stage: number;
  /** What was non-finite: a loss, a gradient, or the weights themselves. */
  kind: "loss" | "gradient" | "weights";
  value?: number;
  /** The parameter (state-dict name), for a gradient or weights. */
  parameter?: string;
  /** The last finite loss of each loss stage, and the step it came from. */
  lastFinite: { stage: number; loss: number; step: number }[];
  /** The newest checkpoint on disk (left as it was), or null. */
  checkpoint: string | null;
}

/** Training diverged (onNonfinite "stop", or too many skipped steps in a row). Exit code 3. */
export class DivergenceError extends TrainingError {
  override name = "DivergenceError";
  constructor(
    message: string,
    readonly divergence: Divergence,
  ) {
    super(message, 3);
  }
}

/** results.json: the readout report plus what was trained and how fast. */
export interface Results extends ReadoutReport {
  method: MethodName;
  dataset: string;
  encoder: string;
  epochs: number;
  training: {
    seconds: number;
    steps: number;
    imagesPerSecond: number;
    dataWaitShare: number;
    finalLoss: number[];
  };
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

function buildOptimizer(options: TrainOptions, named: [string, Tensor][]): AnyOptimizer {
  switch (options.optimizer) {
    case "lars":
      return new LARS(excludeBiasAndNorm(named), {
        lr: options.lr,
        momentum: options.momentum,
        weightDecay: options.weightDecay,
      });
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
  /**
   * Asked after every step (the event loop gets a turn first, so JS signal listeners have run):
   * true stops training after writing a checkpoint (Ctrl-C handling). Also asked before the
   * readout and between its evaluations (training is then complete and checkpointed).
   */
  shouldStop?: () => boolean;
  log?: (message: string) => void;
  progress?: Progress;
  /**
   * Called after each step's backward pass, before the finiteness checks and the optimizer step,
   * with the 1-based step number and every trained parameter by state-dict name (inspection,
   * fault injection in tests).
   */
  afterBackward?: (info: { step: number; parameters: [string, Tensor][] }) => void;
}

export interface TrainOutcome {
  results: Results | null;
  /** True when training stopped early on request (a checkpoint was written). */
  interrupted: boolean;
}

/** JSON with every object's keys sorted, to compare configs whatever their key order. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
        )
      : v,
  );
}

/** Options that define a run: resuming with another value would silently train a different run. */
const RUN_DEFINING = [
  "method",
  "learning",
  "pretrainData",
  "augment",
  "encoder",
  "batchSize",
  "optimizer",
  "weightDecay",
  "momentum",
  "seed",
  "channelsLast",
] as const;
/** Options a user may change on resume on purpose (they act through the schedule); reported. */
const RUN_ADJUSTABLE = ["epochs", "lr", "warmupEpochs"] as const;

function shortJson(value: unknown): string {
  const text = canonical(value) ?? "undefined";
  return text.length > 60 ? `${text.slice(0, 57)}…` : text;
}

/** The differences between the config a checkpoint was written with and the options of a resume. */
export function compareRunConfigs(
  saved: Record<string, unknown>,
  now: TrainOptions,
): { refused: string[]; changed: string[] } {
  const strip = (key: string, v: unknown): unknown =>
    // The dataset may have moved: its folder is not part of the run's identity.
    key === "pretrainData" && v !== null && typeof v === "object"
      ? { ...(v as Record<string, unknown>), dir: undefined }
      : v;
  const differs = (key: string): boolean =>
    canonical(strip(key, saved[key])) !== canonical(strip(key, now[key as keyof TrainOptions]));
  const describe = (key: string): string =>
    `${key} ${shortJson(saved[key])} → ${shortJson(now[key as keyof TrainOptions])}`;
  return {
    refused: RUN_DEFINING.filter((k) => k in saved && differs(k)).map(describe),
    changed: RUN_ADJUSTABLE.filter((k) => k in saved && differs(k)).map(describe),
  };
}

function formatBytes(n: number): string {
  return n >= 2 ** 30
    ? `${(n / 2 ** 30).toFixed(1)} GiB`
    : n >= 2 ** 20
      ? `${(n / 2 ** 20).toFixed(1)} MiB`
      : `${Math.ceil(n / 1024)} KiB`;
}

/**
 * Throws a TrainingError unless the file system holding `dir` has `needed` bytes free (checked
 * before training starts, so that a full disk is reported up front, not at the first checkpoint).
 */
export function checkFreeSpace(dir: string, needed: number, what: string): void {
  let free: number;
  try {
    const st = fs.statfsSync(dir);
    free = Number(st.bavail) * Number(st.bsize);
  } catch {
    return; // no statfs here: the write probe and the checkpoint writes still report errors
  }
  if (free < needed) {
    throw new TrainingError(
      `${dir}: only ${formatBytes(free)} free on its file system, but ${what} need about ${formatBytes(needed)}; ` +
        `nothing was trained: free some space (then: loco train --resume ${dir}), or choose another --run-dir or a lower --keep-checkpoints`,
    );
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Takes runDir/.lock for this process (a stale lock of a process that no longer runs is taken
 * over); throws when another live process holds it. Returns the release function.
 */
function acquireRunLock(runDir: string): () => void {
  const file = path.join(runDir, ".lock");
  for (let attempt = 0; ; attempt++) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: "wx" });
      return () => {
        try {
          if (fs.readFileSync(file, "utf8").trim() === String(process.pid)) fs.rmSync(file, { force: true });
        } catch {
          // already gone
        }
      };
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "EEXIST" || attempt > 0) {
        throw new TrainingError(`run directory ${runDir} is not writable (${(error as Error).message})`);
      }
      let pid = NaN;
      try {
        pid = Number(fs.readFileSync(file, "utf8").trim());
      } catch {
        // unreadable: treat as stale
      }
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) {
        throw new TrainingError(
          `${runDir} is in use by another loco process (pid ${pid}); wait for it to finish or stop it first`,
        );
      }
      fs.rmSync(file, { force: true });
    }
  }
}

/** The trained parameters grouped by encoder stage (1-based), decoders apart, with state-dict names. */
interface ParamGroupInfo {
  stage: number;
  label: string;
  params: [string, Tensor][];
}

function parameterGroups(encoder: ResNet, learner: LocalLearner): ParamGroupInfo[] {
  const names = new Map<Tensor, string>(encoder.namedParameters().map(([k, v]) => [v, `encoder.${k}`]));
  const groups: ParamGroupInfo[] = learner.stages.map((s, k) => ({
    stage: k + 1,
    label: `stage ${k + 1}`,
    params: s
      .parameters()
      .map((p, j): [string, Tensor] => [names.get(p) ?? `encoder stage ${k + 1} parameter ${j}`, p]),
  }));
  learner.losses.forEach((l, i) =>
    groups.push({
      stage: l.stage + 1,
      label: `the decoder of stage ${l.stage + 1}`,
      params: learner
        .decoder(i)
        .namedParameters()
        .map(([k, v]): [string, Tensor] => [`decoders.${i}.${k}`, v]),
    }),
  );
  return groups;
}

/**
 * The first parameter whose gradient (or, with `weights`, whose value) holds a NaN or an
 * infinity, or null. One reduction per tensor and a single read-back in the common, finite case.
 */
function firstNonFinite(groups: ParamGroupInfo[], weights = false): { group: ParamGroupInfo; name: string } | null {
  return noGrad(() =>
    scope(() => {
      const pick = (p: Tensor): Tensor | null => (weights ? p : p.grad);
      const sums: Tensor[] = [];
      for (const g of groups) {
        for (const [, p] of g.params) {
          const t = pick(p);
          if (t !== null) sums.push(t.sum());
        }
      }
      if (sums.length === 0 || Number.isFinite(stack(sums).sum().item())) return null;
      for (const g of groups) {
        for (const [name, p] of g.params) {
          const t = pick(p);
          if (t !== null && t.isfinite().all().item() === 0) return { group: g, name };
        }
      }
      return null; // every value is finite; only their sum overflowed
    }),
  );
}

/** Test aid: behave as if a stop were requested (a Ctrl-C) right after this step. */
function stopAfterStepForTests(): number | null {
  const raw = process.env.LOCO_TEST_STOP_AFTER_STEP;
  const n = raw === undefined ? NaN : Number(raw);
  return Number.isInteger(n) && n > 0 ? n : null;
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Runs a whole training job; writes config, metrics, checkpoints and results into options.runDir. */
export async function train(options: TrainOptions, hooks: TrainHooks = {}): Promise<TrainOutcome> {
  const onNonfinite = options.onNonfinite ?? "stop";
  if (!NON_FINITE_ACTIONS.includes(onNonfinite)) {
    throw new TrainingError(
      `onNonfinite: expected one of ${NON_FINITE_ACTIONS.join(", ")}, got ${JSON.stringify(onNonfinite)}`,
    );
  }
  try {
    fs.mkdirSync(options.runDir, { recursive: true });
  } catch (error) {
    throw new TrainingError(`run directory ${options.runDir} cannot be created (${(error as Error).message})`);
  }
  const releaseLock = acquireRunLock(options.runDir);
  try {
    return await trainLocked(options, hooks, onNonfinite);
  } finally {
    releaseLock();
  }
}

async function trainLocked(
  options: TrainOptions,
  hooks: TrainHooks,
  onNonfinite: NonFiniteAction,
): Promise<TrainOutcome> {
  const log = hooks.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  const progress = hooks.progress ?? new Progress();
  const runDir = options.runDir;
  setNumThreads(options.threads);
  manualSeed(options.seed);
  const metricsFile = path.join(runDir, "metrics.jsonl");
  const metric = (record: Record<string, unknown>): void => {
    try {
      fs.appendFileSync(metricsFile, `${JSON.stringify({ time: new Date().toISOString(), ...record })}\n`);
    } catch (error) {
      throw new TrainingError(`cannot append to ${metricsFile} (${(error as Error).message})`);
    }
  };
  for (const file of removeStaleTemporaries(runDir))
    log(`removed ${file}, left by a checkpoint write that never finished`);

  const open = async (spec: DatasetSpec, role: string): Promise<ImageDataset> => {
    try {
      return await openDataset(spec, { log: (m) => log(`${role} data: ${m}`) });
    } catch (error) {
      throw new TrainingError(`${role} data (${spec.name}): ${(error as Error).message}`);
    }
  };
  // The labelled splits first: they are read (an image folder's decoded) in full, so that a missing
  // val/ folder or a bad image is reported before anything else.
  const testSet = await open(options.testData, "test");
  const trainLabelled = await open(options.trainData, "readout train");
  if (trainLabelled.labels === null) {
    throw new TrainingError(
      `readout train data (${options.trainData.name}): ${trainLabelled.name} has no labels; the linear readout and kNN need labelled images (class folders)`,
    );
  }
  const trainSet = await open({ ...options.pretrainData, labelFree: true }, "pretraining");
  const encoder = buildRunEncoder(options, trainSet.channels);
  const learner = new LocalLearner(encoder, options.learning, { generator: new Generator(options.seed + 1) });
  const named = namedLearnerParameters(encoder, learner);
  const optimizer = buildOptimizer(options, named);
  const groups = parameterGroups(encoder, learner);
  const buffers = [...encoder.buffers(), ...learner.decoders.buffers()];
  // The loader (and its worker threads) is made just before the loop, so that nothing can fail
  // between its start and the finally that closes it. Full batches only (its dropLast default).
  const stepsPerEpoch = Math.floor(trainSet.count / options.batchSize);
  if (stepsPerEpoch === 0) {
    throw new TrainingError(`batch size ${options.batchSize} exceeds the ${trainSet.count} images of ${trainSet.name}`);
  }
  let startPosition = { epoch: 0, batch: 0 };
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
  let skippedSteps = 0;
  let consecutiveSkips = 0;
  // Per loss stage: this epoch's sum and count of finite losses, and the last finite loss.
  let lossSums = new Array<number>(phases).fill(0);
  let lossCounts = new Array<number>(phases).fill(0);
  let lastFinite: ({ loss: number; step: number } | null)[] = new Array(phases).fill(null);
  let lastCheckpoint: string | null = null;
  let checkpointStep = -1;

  // Room for the checkpoints before anything is trained: model + optimizer slots, K kept + 1 being written.
  const tensorBytes = (ts: Iterable<Tensor>): number =>
    [...ts].reduce((a, t) => a + t.numel() * bytesPerElement[t.dtype], 0);
  const slots = options.optimizer === "adam" ? 2 : options.momentum > 0 ? 1 : 0;
  const checkpointBytes =
    tensorBytes(modelState(encoder, learner).values()) + slots * tensorBytes(named.map(([, p]) => p)) + 65536;
  const existing = listCheckpoints(runDir).length;
  const toWrite = Math.max(1, options.keepCheckpoints + 1 - (options.resume ? existing : 0));
  checkFreeSpace(
    runDir,
    toWrite * checkpointBytes + 2 ** 20,
    `${toWrite} more checkpoint${toWrite > 1 ? "s" : ""} of ~${formatBytes(checkpointBytes)}`,
  );

  if (options.resume && existing === 0) {
    // The run stopped (or failed) before its first checkpoint: nothing to continue, start it over.
    log(`${runDir} has no checkpoint yet: the run starts again from step 0`);
    metric({ type: "restart", step: 0 });
  } else if (options.resume) {
    const checkpoint = loadLatestCheckpoint(runDir, (m) => log(`warning: ${m}`), { quarantine: true });
    if (checkpoint === null) {
      throw new TrainingError(
        `${runDir}: --resume found no good checkpoint (all ${existing} failed their checks, see above; they were renamed *.corrupt)`,
      );
    }
    const meta = checkpoint.meta;
    try {
      if (meta.config !== undefined) {
        const { refused, changed } = compareRunConfigs(meta.config, options);
        if (refused.length > 0) {
          throw new TrainingError(
            `${checkpoint.path}: the run was started with other settings (${refused.join("; ")}); ` +
              `resuming would train a different run: restore ${path.join(runDir, "config.json")} or start a new run`,
          );
        }
        for (const c of changed)
          log(`warning: resuming with a changed setting: ${c} (the run will differ from an uninterrupted one)`);
        if (meta.config.threads !== undefined && meta.config.threads !== options.threads) {
          log(
            `note: the run was started with ${String(meta.config.threads)} libtorch threads, it continues with ${options.threads}: ` +
              `results can differ in the last bits from an uninterrupted run (pass --threads ${String(meta.config.threads)} to match)`,
          );
        }
      }
      if (meta.position.epoch * stepsPerEpoch + meta.position.batch !== meta.step) {
        throw new TrainingError(
          `${checkpoint.path}: inconsistent run state: step ${meta.step} but loader position epoch ${meta.position.epoch} batch ${meta.position.batch} ` +
            `(${stepsPerEpoch} batches per epoch)`,
        );
      }
      try {
        loadModelState(encoder, learner, checkpoint.model, checkpoint.path);
        optimizer.loadStateDict({ tensors: checkpoint.optimizer, meta: meta.optimizer as never });
      } catch (error) {
        throw new TrainingError(`${checkpoint.path}: does not fit this run's model (${(error as Error).message})`);
      }
    } finally {
      for (const t of [...checkpoint.model.values(), ...checkpoint.optimizer.values()]) t.release();
    }
    step = meta.step;
    scheduler.setStep(meta.schedule?.step ?? step);
    startPosition = meta.position;
    defaultGenerator.setState(Uint8Array.from(Buffer.from(meta.generatorState, "base64")));
    const extra = meta.extra ?? {};
    trainSeconds = Number(extra.trainSeconds ?? 0);
    waitSeconds = Number(extra.waitSeconds ?? 0);
    skippedSteps = Number(extra.skippedSteps ?? 0);
    consecutiveSkips = Number(extra.consecutiveSkips ?? 0);
    const numbers = (v: unknown): number[] | null =>
      Array.isArray(v) && v.length === phases && v.every((x) => typeof x === "number") ? (v as number[]) : null;
    lossSums = numbers(extra.lossSums) ?? lossSums;
    lossCounts = numbers(extra.lossCounts) ?? lossCounts;
    if (Array.isArray(extra.lastFinite) && extra.lastFinite.length === phases)
      lastFinite = extra.lastFinite as typeof lastFinite;
    lastCheckpoint = checkpoint.path;
    checkpointStep = step;
    log(
      `resumed from ${checkpoint.path} at step ${step} (epoch ${meta.position.epoch + 1}, batch ${meta.position.batch})`,
    );
    metric({ type: "resume", step, checkpoint: checkpoint.path });
  }

  /** The diagnosis of a non-finite step, as an error to throw. */
  const diverged = (
    d: { step: number; epoch: number; stage: number; kind: Divergence["kind"]; value?: number; parameter?: string },
    what: string,
  ): DivergenceError => {
    const finite = lastFinite.flatMap((v, i) =>
      v === null ? [] : [{ stage: learner.losses[i].stage + 1, loss: v.loss, step: v.step }],
    );
    const checkpoint = lastCheckpoint ?? listCheckpoints(runDir).at(-1) ?? null;
    const lines = [
      `training diverged at step ${d.step} (epoch ${d.epoch}): ${what}`,
      `  last finite losses: ${finite.length === 0 ? "none (no step had finished)" : finite.map((f) => `stage ${f.stage} ${f.loss.toPrecision(6)} (step ${f.step})`).join(", ")}`,
      checkpoint === null
        ? "  no checkpoint had been written yet"
        : `  the last good checkpoint is ${checkpoint}; it is left as it was (continue from it with: loco train --resume ${runDir})`,
      onNonfinite === "skip"
        ? "  remedies: a lower --lr or a longer --warmup-epochs (skipping steps cannot help once the weights themselves produce non-finite values)"
        : "  remedies: a lower --lr, a longer --warmup-epochs, or --on-nonfinite skip to skip such steps",
    ];
    return new DivergenceError(lines.join("\n"), { ...d, lastFinite: finite, checkpoint });
  };

  const writeCheckpoint = (): string => {
    if (checkpointStep === step && lastCheckpoint !== null) return lastCheckpoint;
    // Never save weights that have already gone non-finite over a good checkpoint.
    const bad = firstNonFinite(groups, true);
    if (bad !== null) {
      throw diverged(
        {
          step,
          epoch: Math.floor(Math.max(0, step - 1) / stepsPerEpoch) + 1,
          stage: bad.group.stage,
          kind: "weights",
          parameter: bad.name,
        },
        `the weights of ${bad.name} (${bad.group.label}) are non-finite after the update; no checkpoint was written`,
      );
    }
    const position = loader.position;
    const state = optimizer.stateDict();
    const meta: CheckpointMeta = {
      format: CHECKPOINT_FORMAT,
      step,
      position,
      phase: learner.phase,
      optimizer: state.meta,
      generatorState: Buffer.from(defaultGenerator.getState()).toString("base64"),
      schedule: { step: scheduler.stepCount, lrs: scheduler.lrs },
      config: JSON.parse(JSON.stringify(options)) as Record<string, unknown>,
      extra: { trainSeconds, waitSeconds, skippedSteps, consecutiveSkips, lossSums, lossCounts, lastFinite },
    };
    let file: string;
    try {
      file = saveCheckpoint(runDir, meta, modelState(encoder, learner), state.tensors, options.keepCheckpoints);
    } catch (error) {
      throw new TrainingError(
        `could not write the checkpoint of step ${step} to ${checkpointDir(runDir)} (${(error as Error).message}); ` +
          (lastCheckpoint === null
            ? "no earlier checkpoint exists"
            : `the previous checkpoint ${lastCheckpoint} is intact`) +
          `; make room and continue with: loco train --resume ${runDir}`,
      );
    }
    lastCheckpoint = file;
    checkpointStep = step;
    return file;
  };

  const knnBank = strided(trainLabelled, options.knnTrainSize);
  const knnQueries = strided(testSet, options.knnTestSize);
  const runKnnMonitor = async (): Promise<number | null> =>
    options.knnEvery <= 0 || trainLabelled.labels === null
      ? null
      : knnMonitor(encoder, knnBank, knnQueries, options.normalize);

  log(
    `loco train: ${options.method} on ${trainSet.name} (${trainSet.count} images, ${trainSet.channels}x${trainSet.height}x${trainSet.width}), ` +
      `resnet${options.encoder.depth} width ${options.encoder.width} (${options.encoder.stem} stem), ${options.epochs} epochs x ${stepsPerEpoch} steps, ` +
      `batch ${options.batchSize}, ${options.optimizer} lr ${options.lr}, ${getNumThreads()} threads, run dir ${runDir}`,
  );
  const stopAfter = stopAfterStepForTests();
  const stopRequested = async (): Promise<boolean> => {
    await nextTurn(); // let signal handlers run, even when the loader needed no I/O
    return hooks.shouldStop?.() ?? false;
  };
  let interrupted = false;
  let lastLosses: number[] = [];
  const loader = new DataLoader(trainSet, {
    batchSize: options.batchSize,
    augment: options.augment,
    views: 2,
    seed: options.seed,
    workers: options.workers,
    start: startPosition,
    // Streamed image folders with --on-bad-image skip: each skipped file is said once and listed.
    onBadImage: (bad) => log(`warning: skipped ${bad.file} (${bad.reason})`),
    badImagesFile: path.join(runDir, "bad-images.txt"),
  });
  try {
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
      const stepNumber = step + 1;
      type Problem = { kind: Divergence["kind"]; stage: number; value?: number; parameter?: string; text: string };
      const { losses, problem } = scope((): { losses: number[]; problem: Problem | null } => {
        let views = cat([batch.views[0], batch.views[1]]);
        if (options.channelsLast) views = views.channelsLast();
        optimizer.zeroGrad();
        // Skipping a step must leave no trace, batch-norm running statistics included.
        const savedBuffers = onNonfinite === "skip" ? noGrad(() => buffers.map((b) => b.clone())) : null;
        const { lossValues } = learner.step(views);
        hooks.afterBackward?.({ step: stepNumber, parameters: named });
        let found: Problem | null = null;
        const badLoss = lossValues.findIndex(
          (v, i) => !Number.isFinite(v) && (learner.phase === null || learner.phase === i),
        );
        if (badLoss >= 0) {
          const stage = learner.losses[badLoss].stage + 1;
          found = {
            kind: "loss",
            stage,
            value: lossValues[badLoss],
            text: `the loss at stage ${stage} is ${lossValues[badLoss]}`,
          };
          const weights = firstNonFinite(groups, true);
          if (weights !== null) {
            found.text += `; the weights were already non-finite before this step (${weights.name}, ${weights.group.label}): an earlier update overflowed`;
          }
        } else {
          const grad = firstNonFinite(groups);
          if (grad !== null) {
            found = {
              kind: "gradient",
              stage: grad.group.stage,
              parameter: grad.name,
              text: `the gradient of ${grad.name} (${grad.group.label}) is non-finite, while every loss is finite`,
            };
          }
        }
        if (found === null) {
          optimizer.step();
        } else {
          optimizer.zeroGrad();
          if (savedBuffers !== null) noGrad(() => buffers.forEach((b, i) => b.copy_(savedBuffers[i])));
        }
        return { losses: lossValues, problem: found };
      });
      batch.dispose();
      if (problem !== null) {
        progress.end();
        const where = {
          step: stepNumber,
          epoch: epoch + 1,
          stage: problem.stage,
          kind: problem.kind,
          value: problem.value,
          parameter: problem.parameter,
        };
        if (onNonfinite === "stop") throw diverged(where, problem.text);
        skippedSteps++;
        consecutiveSkips++;
        metric({
          type: "skip",
          step: stepNumber,
          epoch: epoch + 1,
          stage: problem.stage,
          kind: problem.kind,
          reason: problem.text,
          skippedSteps,
        });
        if (consecutiveSkips >= MAX_CONSECUTIVE_SKIPS) {
          throw diverged(
            where,
            `${consecutiveSkips} steps in a row were non-finite and skipped (the last: ${problem.text})`,
          );
        }
        log(
          `warning: step ${stepNumber} skipped (--on-nonfinite skip): ${problem.text}; ${skippedSteps} skipped so far`,
        );
      } else {
        consecutiveSkips = 0;
      }
      scheduler.step();
      step++;
      const elapsed = (performance.now() - started) / 1000;
      trainSeconds += elapsed + batch.waitMs / 1000;
      waitSeconds += batch.waitMs / 1000;
      if (problem === null) {
        losses.forEach((v, i) => {
          if (!Number.isFinite(v)) return;
          lossSums[i] += v;
          lossCounts[i]++;
          lastFinite[i] = { loss: v, step };
        });
        lastLosses = losses;
      }
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
        metric({
          type: "step",
          step,
          epoch: epoch + 1,
          lr: scheduler.lrs[0],
          loss: losses,
          imagesPerSecond,
          dataWaitShare: waitSeconds / trainSeconds,
          skippedSteps,
        });
      }
      if (options.checkpointEvery > 0 && step % options.checkpointEvery === 0 && stepInEpoch !== stepsPerEpoch)
        writeCheckpoint();
      if (stepInEpoch === stepsPerEpoch) {
        const meanLoss = lossSums.map((s, i) => (lossCounts[i] > 0 ? s / lossCounts[i] : NaN));
        const knn = (epoch + 1) % Math.max(1, options.knnEvery) === 0 ? await runKnnMonitor() : null;
        progress.end();
        log(
          `epoch ${epoch + 1}/${options.epochs}: loss ${meanLoss.map((l) => (Number.isFinite(l) ? l.toFixed(4) : "-")).join(" ")}` +
            (knn === null ? "" : `  kNN top-1 ${(knn * 100).toFixed(2)}%`) +
            `  ${formatDuration(trainSeconds)} elapsed, data-wait ${((waitSeconds / trainSeconds) * 100).toFixed(1)}%` +
            (skippedSteps > 0 ? `, ${skippedSteps} steps skipped` : ""),
        );
        lossSums = new Array<number>(phases).fill(0);
        lossCounts = new Array<number>(phases).fill(0);
        metric({
          type: "epoch",
          epoch: epoch + 1,
          step,
          loss: meanLoss,
          knnTop1: knn,
          trainSeconds,
          dataWaitShare: waitSeconds / trainSeconds,
          skippedSteps,
        });
        writeCheckpoint();
      }
      if ((await stopRequested()) || step === stopAfter) {
        progress.end();
        const file = writeCheckpoint();
        log(`stopped at step ${step}: checkpoint ${file}`);
        interrupted = true;
        break;
      }
    }
    // A stop requested during the last step: training is complete and checkpointed.
    if (!interrupted && (await stopRequested())) {
      const file = writeCheckpoint();
      log(`stopped before the readout: training is complete (checkpoint ${file}); --resume runs the readout`);
      interrupted = true;
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
  const report = await readoutReport(encoder, trainLabelled, testSet, {
    normalize: options.normalize,
    readoutEpochs: options.readoutEpochs,
    readoutTrainSize: options.readoutTrainSize,
    baselines: options.baselines,
    perStage: options.perStage,
    supervisedEpochs: options.supervisedEpochs,
    batchSize: options.batchSize,
    seed: options.seed,
    freshEncoder: () => buildRunEncoder(options, trainSet.channels),
    // A stop requested during the readout ends it at the next evaluation boundary (training is done).
    shouldStop: () => hooks.shouldStop?.() ?? false,
  });
  if (report === null) {
    log(
      `stopped during the readout: training is complete (checkpoint ${lastCheckpoint}); loco train --resume ${runDir} runs the readout again`,
    );
    learner.dispose();
    encoder.dispose();
    optimizer.dispose();
    return { results: null, interrupted: true };
  }
  const results: Results = {
    method: options.method,
    dataset: options.trainData.name,
    encoder: `resnet${options.encoder.depth}-w${options.encoder.width}-${options.encoder.stem}`,
    epochs: options.epochs,
    ...report,
    training: {
      seconds: trainSeconds,
      steps: step,
      imagesPerSecond: (step * options.batchSize) / Math.max(trainSeconds, 1e-9),
      dataWaitShare: waitSeconds / Math.max(trainSeconds, 1e-9),
      finalLoss: lastLosses,
    },
  };
  writeJsonAtomic(path.join(options.runDir, "results.json"), results);
  metric({ type: "results", ...results });
  learner.dispose();
  encoder.dispose();
  optimizer.dispose();
  return { results, interrupted: false };
}

export { writeJsonAtomic };
