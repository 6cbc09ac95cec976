// The trainer: pretrain an encoder with SimCLR end to end, GIM or LoCo (any configuration of the
// router), monitor it with kNN, read it out with the linear protocol against the baselines, and
// keep everything in a run directory. Built from parts a stage-parallel worker or a grid runner can
// reuse: options (options.ts), run directory (rundir.ts), model (model.ts), one guarded step
// (step.ts), divergence (divergence.ts), resume (resume.ts), state (state.ts), metrics (metrics.ts).
import * as path from "node:path";
import { type Tensor, defaultGenerator, getNumThreads, manualSeed, setNumThreads } from "../torch";
import { LRScheduler, LinearWarmupCosine } from "../optim/schedule";
import { type ImageDataset, subset } from "../data/dataset";
import { type DatasetSpec, openDataset } from "../data/datasets";
import type { BadImage } from "../data/folder";
import { DataLoader } from "../data/loader";
import { bytesPerElement } from "../torch/dtype";
import { Progress, formatDuration } from "./progress";
import { writeMetricsCsv } from "./metrics-csv";
import { describeSplit } from "./split";
import {
  type CheckpointMeta,
  CHECKPOINT_FORMAT,
  checkpointDir,
  checkpointPath,
  listCheckpoints,
  saveCheckpoint,
} from "./checkpoint";
import type { ProcessGroup } from "../torch/distributed";
import { type DataParallel, attachDataParallel, dataParallelFailure, joinProcessGroup } from "./data-parallel";
import { type StageParallel, attachStageParallel, checkStageParallelOptions } from "./stage-training";
import { MAX_CONSECUTIVE_SKIPS, type DivergencePoint, divergenceError, firstNonFiniteTensor } from "./divergence";
import { buildRunEncoder, describeEncoder } from "./encoders";
import { TrainingError } from "./errors";
import { type MetricsRecord, MetricsWriter } from "./metrics";
import { type TrainModel, buildTrainModel, disposeTrainModel, modelState } from "./model";
import {
  type NonFiniteAction,
  type TrainInput,
  type TrainOptions,
  describeMethod,
  resolveTrainOptions,
} from "./options";
import { type EvalBatchOptions, evalDataSpec, knnMonitor, readoutReport, strided } from "./readout";
import type { Results } from "./results";
import { type RankInfo, restoreRun } from "./resume";
import { checkFreeSpace, formatBytes, openRunDirectory, writeJsonAtomic } from "./rundir";
import { resumeOptions, runConfigJson } from "./runs";
import { guardedStep } from "./step";
import {
  type TrainState,
  checkpointExtra,
  dataWaitShare,
  imagesPerSecond,
  newTrainState,
  recordLosses,
  takeEpochLoss,
} from "./state";

export interface TrainHooks {
  /**
   * Asked after every step with the number of steps done (the event loop gets a turn first, so
   * JS signal listeners have run): true stops training after writing a checkpoint (Ctrl-C
   * handling). Also asked before the readout and between its evaluations.
   */
  shouldStop?: (info: { step: number }) => boolean;
  /** Where messages go (default: stderr). */
  log?: (message: string) => void;
  progress?: Progress;
  /**
   * Called after each step's backward pass, before the finiteness checks and the optimizer step,
   * with the 1-based step number and every trained parameter by state-dict name (inspection,
   * fault injection in tests).
   */
  afterBackward?: (info: { step: number; parameters: [string, Tensor][] }) => void;
  /**
   * The dtype the model trains in (default float32, what every run uses). float64 is for tests
   * that compare two runs beyond float32 rounding (data parallel against one process).
   */
  dtype?: "float32" | "float64";
}

export interface TrainOutcome {
  /** The run's results (null when interrupted, and on data-parallel ranks other than 0, which do not read out). */
  results: Results | null;
  /** True when training stopped early on request (a checkpoint was written). */
  interrupted: boolean;
  /** The resolved options the run trained with (runDir included). */
  options: TrainOptions;
}

/** The datasets of a run, opened (and so checked) before anything is written. */
interface RunData {
  pretrain: ImageDataset;
  train: ImageDataset;
  test: ImageDataset;
  stepsPerEpoch: number;
}

async function openRunData(options: TrainOptions, log: (m: string) => void, worldSize: number): Promise<RunData> {
  const open = async (spec: DatasetSpec, role: string): Promise<ImageDataset> => {
    try {
      return await openDataset(spec, { log: (m) => log(`${role} data: ${m}`) });
    } catch (error) {
      throw new TrainingError(`${role} data (${spec.name}): ${(error as Error).message}`);
    }
  };
  // The labelled splits first, so that a missing val/ folder is reported before anything else. An
  // image folder's are listed, not decoded: they stream through the kNN monitor and the readout
  // (a file that fails to decode is found there, and stops the run or is skipped as for pretraining).
  const test = await open(evalDataSpec(options.testData), "test");
  const train = await open(evalDataSpec(options.trainData), "readout train");
  if (train.labels === null) {
    throw new TrainingError(
      `readout train data (${options.trainData.name}): ${train.name} has no labels; the linear readout and kNN need labelled images (class folders)`,
    );
  }
  const { subset: subsetOptions, ...pretrainSpec } = options.pretrainData;
  let pretrain = await open({ ...pretrainSpec, labelFree: true }, "pretraining");
  if (subsetOptions !== undefined) {
    if (subsetOptions.count > pretrain.count) {
      throw new TrainingError(
        `a pretraining subset of ${subsetOptions.count} images (trainSubset, --train-subset) exceeds the ${pretrain.count} images of ${pretrain.name}; ` +
          `nothing was written: choose at most ${pretrain.count} (0: all)`,
        2,
      );
    }
    pretrain = subset(pretrain, subsetOptions);
  }
  // Full batches only (the loader's dropLast default); data parallel: global batches of batchSize per rank.
  const globalBatch = options.batchSize * worldSize;
  const stepsPerEpoch = Math.floor(pretrain.count / globalBatch);
  if (stepsPerEpoch === 0) {
    throw new TrainingError(
      `batch size ${options.batchSize}${worldSize > 1 ? ` x ${worldSize} ranks` : ""} exceeds the ${pretrain.count} images of ${pretrain.name}; nothing was written`,
      2,
    );
  }
  return { pretrain, train, test, stepsPerEpoch };
}

/**
 * Runs a whole training job: resolves `input` (defaults for everything not given; `resume: DIR`
 * continues a run), checks the options and data before touching the run directory, then trains,
 * checkpoints and reads out, writing config.json, metrics.jsonl, checkpoints and results.json into
 * the run directory. `train({ method: "loco", dataset: "fashion-mnist", epochs: 1 })` works as is.
 */
export async function train(input: TrainInput = {}, hooks: TrainHooks = {}): Promise<TrainOutcome> {
  const log = hooks.log ?? ((m: string) => void process.stderr.write(`${m}\n`));
  const options = input.resume !== undefined ? resumeOptions(input, log) : resolveTrainOptions(input);
  checkStageParallelOptions(options);
  const group = await joinProcessGroup(options);
  try {
    // Data parallel: one step takes batchSize images on every rank; stage parallel: batchSize in all.
    const data = await openRunData(options, log, options.parallel === "data" ? (group?.worldSize ?? 1) : 1);
    // Several ranks: rank 0 alone writes the run directory; the others say only warnings and errors.
    if (group !== null && group.rank !== 0) {
      const rankLog = (m: string): void => void (/^(warning|error)/.test(m) && log(`rank ${group.rank}: ${m}`));
      return await runTraining(options, data, { ...hooks, log: rankLog }, group);
    }
    const runDir = openRunDirectory(options.runDir, options.resume, log);
    try {
      if (!options.resume) writeJsonAtomic(path.join(options.runDir, "config.json"), runConfigJson(input, options));
      return await runTraining(options, data, { ...hooks, log }, group);
    } finally {
      writeMetricsCsv(options.runDir); // metrics.csv beside metrics.jsonl, however the run ended
      runDir.release();
    }
  } finally {
    // After a success the group is gone already; after an error this rank leaves without waiting.
    await group?.destroy({ wait: false });
  }
}

/** What the loop and its helpers share. */
interface TrainContext {
  options: TrainOptions;
  onNonfinite: NonFiniteAction;
  model: TrainModel;
  state: TrainState;
  scheduler: LRScheduler;
  /** Null on the ranks of a stage-parallel run other than 0 (rank 0 feeds the views). */
  loader: DataLoader | null;
  stepsPerEpoch: number;
  totalSteps: number;
  hooks: TrainHooks & { log: (m: string) => void };
  progress: Progress;
  /** Data or stage parallel (null: one process). */
  dp: DataParallel | null;
  /** Stage parallel (null otherwise): gathers to rank 0 before checkpoints and the kNN monitor. */
  stages: StageParallel | null;
  /** Whether this process writes the run directory (rank 0 of a parallel run). */
  writer: boolean;
  /** Images of one optimizer step: batchSize (× ranks, data parallel). */
  globalBatch: number;
  metric: (record: MetricsRecord) => void;
  /** How the evaluations read streamed image folders (workers, bad files said once). */
  evalData: EvalBatchOptions;
  /** kNN top-1 of the encoder now (null: the monitor is off). */
  knn: () => Promise<number | null>;
  /** Sequential schedule: the phase last announced in the log. */
  announcedPhase: number | null;
}

/** Trains (from scratch or from the newest checkpoint) and reads out; the model is disposed on every path. */
async function runTraining(
  options: TrainOptions,
  data: RunData,
  hooks: TrainHooks & { log: (m: string) => void },
  group: ProcessGroup | null,
): Promise<TrainOutcome> {
  const { log } = hooks;
  setNumThreads(options.threads);
  manualSeed(options.seed);
  const writer = group === null || group.rank === 0;
  const worldSize = group?.worldSize ?? 1;
  const metricsFile = path.join(options.runDir, "metrics.jsonl");
  const metricsWriter = new MetricsWriter(metricsFile);
  const metric = (record: MetricsRecord): void => {
    if (!writer) return;
    try {
      metricsWriter.append(record);
    } catch (error) {
      throw new TrainingError(`cannot append to ${metricsFile} (${(error as Error).message})`);
    }
  };
  // Bad files of a streamed folder (--on-bad-image skip) are said once, whoever finds them:
  // pretraining, the kNN monitor or the readout.
  const saidBad = new Set<string>();
  const sayBad = (bad: BadImage): void => {
    if (saidBad.has(bad.file)) return;
    saidBad.add(bad.file);
    log(`warning: skipped ${bad.file} (${bad.reason})`);
  };
  // A fresh run's loader comes first: its workers start on the first batches while the model is
  // built. A resumed run's starts at its checkpoint's position, known once the model is restored.
  // Stage parallel: rank 0 alone feeds the data.
  const feedsData = group === null || options.parallel !== "stages" || group.rank === 0;
  const makeLoader = (start: { epoch: number; batch: number }): DataLoader | null =>
    !feedsData
      ? null
      : new DataLoader(data.pretrain, {
          batchSize: options.batchSize,
          augment: options.augment,
          views: 2,
          seed: options.seed,
          workers: options.workers,
          start,
          ...(group === null || options.parallel === "stages" ? {} : { shard: { rank: group.rank, count: worldSize } }),
          // Streamed image folders with --on-bad-image skip: each skipped file is said once and listed.
          onBadImage: sayBad,
          ...(writer ? { badImagesFile: path.join(options.runDir, "bad-images.txt") } : {}),
        });
  let loader = options.resume ? null : makeLoader({ epoch: 0, batch: 0 });
  let model: TrainModel;
  try {
    model = buildTrainModel(options, data.pretrain.channels, hooks.dtype);
  } catch (error) {
    await loader?.close();
    throw error;
  }
  try {
    const stages =
      group !== null && options.parallel === "stages" ? await attachStageParallel(group, model, options) : null;
    const dp = group === null ? null : (stages ?? (await attachDataParallel(group, model)));
    const { stepsPerEpoch } = data;
    const totalSteps = stepsPerEpoch * options.epochs;
    const scheduler = new LRScheduler(
      model.optimizer,
      new LinearWarmupCosine({
        baseLr: options.lr,
        warmupSteps: Math.min(totalSteps, Math.round(options.warmupEpochs * stepsPerEpoch)),
        totalSteps,
      }),
    );
    const state = newTrainState(model.learner.losses.length);
    if (writer) checkCheckpointSpace(options, model);
    const ranks = { worldSize, writer, ...(stages === null ? {} : { stageLayout: stages.layout }) };
    const start = options.resume
      ? resumeOrRestart(options, model, scheduler, state, stepsPerEpoch, log, metric, ranks)
      : { epoch: 0, batch: 0 };
    if (options.resume) loader = makeLoader(start);
    log(
      `loco train: ${describeMethod(options.method, options.learning)} on ${data.pretrain.name} ` +
        `(${data.pretrain.count} images, ${data.pretrain.channels}x${data.pretrain.height}x${data.pretrain.width}), ` +
        `${describeEncoder(options)}, ${options.epochs} epochs x ${stepsPerEpoch} steps, batch ${options.batchSize}, ` +
        `${options.optimizer} lr ${options.lr}, ${getNumThreads()} threads, run dir ${options.runDir}`,
    );
    log(
      `stages: ${model.learner.stages.length} (split ${JSON.stringify(options.learning.split ?? "resnet")}, blocks ` +
        `${describeSplit(model.learner.split, model.encoder.blocks().length)}), overlap ${options.learning.overlap ?? "retain"}`,
    );
    if (stages !== null) {
      log(
        `stage parallel (${options.stageSchedule ?? "sync"}): ` +
          stages.layout.map((l, r) => `rank ${r} stages ${l.first + 1}-${l.last + 1}`).join(", ") +
          `; rank 0 reads the data and writes ${options.runDir}`,
      );
    } else if (dp !== null) {
      log(
        `data parallel: ${worldSize} ranks x batch ${options.batchSize} = global batch ${options.batchSize * worldSize} ` +
          `(SyncBatchNorm, NT-Xent over the global batch, gradients averaged); rank 0 writes ${options.runDir}`,
      );
    }
    const evalData: EvalBatchOptions = { workers: options.workers, onBadImage: sayBad };
    const knnBank = strided(data.train, options.knnTrainSize);
    const knnQueries = strided(data.test, options.knnTestSize);
    const ctx: TrainContext = {
      options,
      onNonfinite: options.onNonfinite ?? "stop",
      model,
      state,
      scheduler,
      loader,
      stepsPerEpoch,
      totalSteps,
      hooks,
      progress: !writer ? new Progress(silentStream) : (hooks.progress ?? new Progress()),
      dp,
      stages,
      writer,
      globalBatch: options.batchSize * (stages === null ? worldSize : 1),
      metric,
      announcedPhase: null,
      evalData,
      // Data parallel: every rank computes the monitor on its identical replica (eval mode, no
      // collective), so that no rank waits for rank 0's; rank 0 alone reports it.
      // Stage parallel: rank 0 alone, on the model gathered before.
      knn: async () =>
        options.knnEvery <= 0 || data.train.labels === null || (stages !== null && !writer)
          ? null
          : knnMonitor(model.encoder, knnBank, knnQueries, options.normalize, evalData),
    };
    let interrupted: boolean;
    try {
      interrupted = await trainLoop(ctx);
    } catch (error) {
      throw (dp !== null && dataParallelFailure(dp, error, state.step, options.runDir, state.lastCheckpoint)) || error;
    } finally {
      ctx.progress.end();
      await loader?.close();
    }
    // Training is over on every rank: leave the group together; rank 0 alone reads out.
    if (stages !== null) await stages.leave();
    else if (dp !== null) await dp.group.destroy();
    if (interrupted) return { results: null, interrupted: true, options };
    if (!writer) return { results: null, interrupted: false, options };
    const results = await readOut(ctx, data);
    return { results, interrupted: results === null, options };
  } finally {
    await loader?.close(); // (closed already after the loop; here when something failed before it)
    disposeTrainModel(model);
  }
}

/** Restores the newest checkpoint of a resumed run (or starts it over); returns the loader's start. */
function resumeOrRestart(
  options: TrainOptions,
  model: TrainModel,
  scheduler: LRScheduler,
  state: TrainState,
  stepsPerEpoch: number,
  log: (m: string) => void,
  metric: (record: MetricsRecord) => void,
  ranks: RankInfo,
): { epoch: number; batch: number } {
  const restored = restoreRun(options, model, scheduler, state, stepsPerEpoch, log, ranks);
  if (restored === null) {
    // The run stopped (or failed) before its first checkpoint: nothing to continue, start it over.
    log(`${options.runDir} has no checkpoint yet: the run starts again from step 0`);
    metric({ type: "restart", step: 0 });
    return { epoch: 0, batch: 0 };
  }
  const start = restored.position;
  log(`resumed from ${restored.checkpoint} at step ${state.step} (epoch ${start.epoch + 1}, batch ${start.batch})`);
  metric({ type: "resume", step: state.step, checkpoint: restored.checkpoint });
  return start;
}

/** Room for the checkpoints before anything is trained: model + optimizer slots, K kept + 1 being written. */
function checkCheckpointSpace(options: TrainOptions, model: TrainModel): void {
  const tensorBytes = (ts: Iterable<Tensor>): number =>
    [...ts].reduce((a, t) => a + t.numel() * bytesPerElement[t.dtype], 0);
  const slots = options.optimizer === "adam" ? 2 : options.momentum > 0 ? 1 : 0;
  const checkpointBytes =
    tensorBytes(modelState(model).values()) + slots * tensorBytes(model.named.map(([, p]) => p)) + 65536;
  const existing = listCheckpoints(options.runDir).length;
  const toWrite = Math.max(1, options.keepCheckpoints + 1 - (options.resume ? existing : 0));
  checkFreeSpace(
    options.runDir,
    toWrite * checkpointBytes + 2 ** 20,
    `${toWrite} more checkpoint${toWrite > 1 ? "s" : ""} of ~${formatBytes(checkpointBytes)} plus ~1 MiB of logs`,
  );
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Where the progress line of a data-parallel rank other than 0 goes. */
const silentStream = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;

/** The diagnosis of a non-finite step at `point`, as an error to throw. */
function diverged(ctx: TrainContext, point: DivergencePoint, what: string): TrainingError {
  return divergenceError(point, what, {
    learner: ctx.model.learner,
    lastFinite: ctx.state.lastFinite,
    checkpoint: ctx.state.lastCheckpoint ?? listCheckpoints(ctx.options.runDir).at(-1) ?? null,
    runDir: ctx.options.runDir,
    onNonfinite: ctx.onNonfinite,
  });
}

/** Stage parallel: every rank's stages into rank 0's model and optimizer (once per step; every rank calls it). */
async function gatherStages(ctx: TrainContext): Promise<void> {
  if (ctx.stages === null || ctx.state.gatheredStep === ctx.state.step) return;
  await ctx.stages.gather();
  ctx.state.gatheredStep = ctx.state.step;
}

/** Writes a checkpoint of the current step (once per step); refuses to save non-finite weights. */
async function writeCheckpoint(ctx: TrainContext): Promise<string> {
  const { options, model, state } = ctx;
  if (state.checkpointStep === state.step && state.lastCheckpoint !== null) return state.lastCheckpoint;
  await gatherStages(ctx);
  // Never save a non-finite tensor (weights or batch-norm statistics) over a good checkpoint.
  const badName = firstNonFiniteTensor(modelState(model));
  if (badName !== null) {
    const prefix = badName.slice(0, badName.lastIndexOf(".") + 1);
    const group = model.groups.find((g) => g.params.some(([n]) => n.startsWith(prefix))) ?? model.groups[0];
    const bad = { name: badName, group };
    throw diverged(
      ctx,
      {
        step: state.step,
        epoch: Math.floor(Math.max(0, state.step - 1) / ctx.stepsPerEpoch) + 1,
        stage: bad.group.stage,
        kind: model.named.some(([n]) => n === bad.name) ? "weights" : "buffer",
        parameter: bad.name,
      },
      `${bad.name} (${bad.group.label}) is non-finite after the update; no checkpoint was written`,
    );
  }
  if (!ctx.writer) {
    // Rank 0 writes this step's checkpoint; the other ranks name it in their messages.
    state.lastCheckpoint = checkpointPath(options.runDir, state.step);
    state.checkpointStep = state.step;
    return state.lastCheckpoint;
  }
  const optimizerState = model.optimizer.stateDict();
  const meta: CheckpointMeta = {
    format: CHECKPOINT_FORMAT,
    step: state.step,
    position: ctx.loader!.position,
    phase: model.learner.phase,
    optimizer: optimizerState.meta,
    generatorState: Buffer.from(defaultGenerator.getState()).toString("base64"),
    schedule: { step: ctx.scheduler.stepCount, lrs: ctx.scheduler.lrs },
    config: JSON.parse(JSON.stringify(options)) as Record<string, unknown>,
    split: model.learner.split,
    extra: checkpointExtra(state),
    ...(ctx.dp === null ? {} : { worldSize: ctx.dp.worldSize }),
    ...(ctx.stages === null ? {} : { stageLayout: ctx.stages.layout.map(({ first, last }) => [first, last]) }),
  };
  let file: string;
  try {
    file = saveCheckpoint(options.runDir, meta, modelState(model), optimizerState.tensors, options.keepCheckpoints);
  } catch (error) {
    throw new TrainingError(
      `could not write the checkpoint of step ${state.step} to ${checkpointDir(options.runDir)} (${(error as Error).message}); ` +
        (state.lastCheckpoint === null
          ? "no earlier checkpoint exists"
          : `the previous checkpoint ${state.lastCheckpoint} is intact`) +
        `; make room and continue with: loco train --resume ${options.runDir}`,
    );
  }
  state.lastCheckpoint = file;
  state.checkpointStep = state.step;
  return file;
}

/** Which sequential phase an epoch belongs to (epochs split evenly between the losses). */
export function phaseOfEpoch(epoch: number, epochs: number, phases: number): number {
  return Math.min(phases - 1, Math.floor((epoch * phases) / epochs));
}

/** "stage 3", "stages 1-2": 1-based, contiguous runs joined. */
function stageList(flags: boolean[]): string {
  const picked = flags.flatMap((on, k) => (on ? [k + 1] : []));
  if (picked.length === 0) return "no stage";
  const contiguous = picked.every((s, i) => i === 0 || s === picked[i - 1] + 1);
  if (picked.length === 1) return `stage ${picked[0]}`;
  return contiguous ? `stages ${picked[0]}-${picked.at(-1)}` : `stages ${picked.join(",")}`;
}

/** Sequential schedule: enters the epoch's phase, saying what it trains. */
function enterPhase(ctx: TrainContext, epoch: number): void {
  const { learner } = ctx.model;
  const phases = learner.losses.length;
  const phase = phaseOfEpoch(epoch, ctx.options.epochs, phases);
  if (ctx.announcedPhase === phase) return;
  if (learner.phase !== phase) learner.setPhase(phase);
  ctx.announcedPhase = phase;
  const trainable = learner.trainableStages();
  const loss = learner.losses[phase];
  const frozen = trainable.slice(0, loss.stage).map((t) => !t);
  ctx.hooks.log(
    `sequential schedule: phase ${phase + 1}/${phases} trains ${stageList(trainable)} and the decoder of stage ${loss.stage + 1}` +
      (frozen.some((f) => f) ? `; ${stageList(frozen)} frozen` : ""),
  );
}

/** Counts a non-finite step: throws the diagnosis with "stop" or after too many skips in a row. */
function handleProblem(ctx: TrainContext, point: DivergencePoint, text: string): void {
  const { state } = ctx;
  ctx.progress.end();
  if (ctx.onNonfinite === "stop") throw diverged(ctx, point, text);
  state.skippedSteps++;
  state.consecutiveSkips++;
  ctx.metric({
    type: "skip",
    step: point.step,
    epoch: point.epoch,
    stage: point.stage,
    kind: point.kind,
    reason: text,
    skippedSteps: state.skippedSteps,
  });
  if (state.consecutiveSkips >= MAX_CONSECUTIVE_SKIPS) {
    throw diverged(
      ctx,
      point,
      `${state.consecutiveSkips} steps in a row were non-finite and skipped (the last: ${text})`,
    );
  }
  ctx.hooks.log(
    `warning: step ${point.step} skipped (--on-nonfinite skip): ${text}; ${state.skippedSteps} skipped so far`,
  );
}

/** Epoch end: the epoch's mean losses, the kNN monitor, a log line, a record and a checkpoint. */
async function endEpoch(ctx: TrainContext, epoch: number): Promise<void> {
  const { options, state } = ctx;
  const meanLoss = takeEpochLoss(state);
  const knnDue = options.knnEvery > 0 && (epoch + 1) % options.knnEvery === 0;
  if (knnDue) await gatherStages(ctx);
  const knn = knnDue ? await ctx.knn() : null;
  ctx.progress.end();
  ctx.hooks.log(
    `epoch ${epoch + 1}/${options.epochs}: loss ${meanLoss.map((l) => (Number.isFinite(l) ? l.toFixed(4) : "-")).join(" ")}` +
      (knn === null ? "" : `  kNN top-1 ${(knn * 100).toFixed(2)}%`) +
      `  ${formatDuration(state.trainSeconds)} elapsed, data-wait ${(dataWaitShare(state) * 100).toFixed(1)}%` +
      (state.skippedSteps > 0 ? `, ${state.skippedSteps} steps skipped` : ""),
  );
  ctx.metric({
    type: "epoch",
    epoch: epoch + 1,
    step: state.step,
    loss: meanLoss,
    knnTop1: knn,
    trainSeconds: state.trainSeconds,
    dataWaitShare: dataWaitShare(state),
    skippedSteps: state.skippedSteps,
  });
  await writeCheckpoint(ctx);
}

/** The training loop; returns true when stopped on request (a checkpoint was written). */
async function trainLoop(ctx: TrainContext): Promise<boolean> {
  const { options, model, state, stepsPerEpoch, totalSteps, hooks } = ctx;
  const stopRequested = async (): Promise<boolean> => {
    await nextTurn(); // let signal handlers run, even when the loader needed no I/O
    const requested = hooks.shouldStop?.({ step: state.step }) ?? false;
    // Ctrl-C reaches the ranks at different steps: they stop together, at the same step.
    return ctx.dp === null ? requested : ctx.dp.agreeToStop(requested);
  };
  while (state.step < totalSteps) {
    const epoch = Math.floor(state.step / stepsPerEpoch);
    if (options.learning.schedule === "sequential") enterPhase(ctx, epoch);
    model.learner.train();
    const batch = ctx.loader === null ? null : await ctx.loader.next();
    const started = performance.now();
    const stepNumber = state.step + 1;
    let step: Awaited<ReturnType<typeof guardedStep>>;
    try {
      step = await guardedStep(model, batch === null ? null : [batch.views[0], batch.views[1]], {
        restoreBuffersOnProblem: ctx.onNonfinite === "skip",
        channelsLast: options.channelsLast,
        dtype: hooks.dtype ?? "float32",
        afterBackward: () => hooks.afterBackward?.({ step: stepNumber, parameters: model.named }),
        ...(ctx.dp === null ? {} : { sync: ctx.dp.sync }),
      });
    } finally {
      batch?.dispose();
    }
    const { losses, problem } = step;
    if (problem !== null) {
      const { kind, stage, value, parameter, text } = problem;
      handleProblem(ctx, { step: stepNumber, epoch: epoch + 1, stage, kind, value, parameter }, text);
    } else {
      state.consecutiveSkips = 0;
    }
    ctx.scheduler.step();
    state.step++;
    const waitMs = batch?.waitMs ?? 0;
    state.trainSeconds += (performance.now() - started) / 1000 + waitMs / 1000;
    state.waitSeconds += waitMs / 1000;
    if (problem === null) recordLosses(state, losses);
    const speed = imagesPerSecond(state, ctx.globalBatch);
    const stepInEpoch = state.step - epoch * stepsPerEpoch;
    ctx.progress.update({
      epoch: epoch + 1,
      epochs: options.epochs,
      step: stepInEpoch,
      steps: stepsPerEpoch,
      losses,
      imagesPerSecond: speed,
      dataWait: dataWaitShare(state),
      etaSeconds: ((totalSteps - state.step) * ctx.globalBatch) / speed,
    });
    const epochEnds = stepInEpoch === stepsPerEpoch;
    if (state.step % 10 === 0 || epochEnds) {
      ctx.metric({
        type: "step",
        step: state.step,
        epoch: epoch + 1,
        lr: ctx.scheduler.lrs[0],
        loss: losses,
        imagesPerSecond: speed,
        dataWaitShare: dataWaitShare(state),
        skippedSteps: state.skippedSteps,
      });
      // Stage parallel: every rank's busy and wait time, images/s and peak memory (every rank gathers).
      for (const record of (await ctx.stages?.rankRecords(state.step)) ?? []) ctx.metric(record);
    }
    if (options.checkpointEvery > 0 && state.step % options.checkpointEvery === 0 && !epochEnds)
      await writeCheckpoint(ctx);
    if (epochEnds) await endEpoch(ctx, epoch);
    if (await stopRequested()) {
      ctx.progress.end();
      const file = await writeCheckpoint(ctx);
      hooks.log(`stopped at step ${state.step}: checkpoint ${file}`);
      return true;
    }
  }
  // A stop requested during the last step's epoch end: training is complete and checkpointed.
  if (await stopRequested()) {
    const file = await writeCheckpoint(ctx);
    hooks.log(`stopped before the readout: training is complete (checkpoint ${file}); --resume runs the readout`);
    return true;
  }
  return false;
}

/** The readout of the trained encoder; writes results.json. Null when stopped during it. */
async function readOut(ctx: TrainContext, data: RunData): Promise<Results | null> {
  const { options, model, state, hooks } = ctx;
  const training: Results["training"] = {
    seconds: state.trainSeconds,
    steps: state.step,
    imagesPerSecond: imagesPerSecond(state, ctx.globalBatch),
    dataWaitShare: dataWaitShare(state),
    finalLoss: state.lastLosses,
  };
  const settings = {
    method: options.method,
    methodSettings: describeMethod(options.method, options.learning),
    learning: options.learning,
    dataset: options.trainData.name,
    encoder: describeEncoder(options),
    epochs: options.epochs,
  };
  let results: Results;
  if (options.readout === "none") {
    hooks.log("readout: none (--readout none)");
    results = { ...settings, training };
  } else {
    hooks.log("evaluating: linear readout on frozen features, kNN, baselines …");
    const report = await readoutReport(model.encoder, data.train, data.test, {
      normalize: options.normalize,
      readoutEpochs: options.readoutEpochs,
      readoutWeightDecays: options.readoutWeightDecays,
      readoutTrainSize: options.readoutTrainSize,
      readoutTestSize: options.readoutTestSize,
      baselines: options.baselines,
      perStage: options.perStage,
      supervisedEpochs: options.supervisedEpochs,
      batchSize: options.batchSize,
      seed: options.seed,
      freshEncoder: () => buildRunEncoder(options, data.pretrain.channels),
      // A stop requested during the readout ends it at the next evaluation boundary (training is done).
      shouldStop: () => hooks.shouldStop?.({ step: state.step }) ?? false,
      log: hooks.log,
      data: ctx.evalData,
    });
    if (report === null) {
      hooks.log(
        `stopped during the readout: training is complete (checkpoint ${state.lastCheckpoint}); ` +
          `loco train --resume ${options.runDir} runs the readout again`,
      );
      return null;
    }
    results = { ...settings, ...report, training };
  }
  writeJsonAtomic(path.join(options.runDir, "results.json"), results);
  ctx.metric({ type: "results", ...results });
  return results;
}
