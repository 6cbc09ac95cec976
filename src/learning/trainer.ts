// The trainer: pretrain an encoder with SimCLR end to end, GIM or LoCo (any configuration of the
// router), monitor it with kNN, read it out with the linear protocol against the baselines, and
// keep everything in a run directory. Built from parts a stage-parallel worker or a grid runner can
// reuse: options (options.ts), data (run-data.ts), run directory (rundir.ts), model (model.ts), one
// guarded step (step.ts), divergence (divergence.ts), the loop's context and non-finite handling
// (train-context.ts), checkpoints (train-checkpoint.ts), sequential phases (phases.ts), resume
// (resume.ts), state (state.ts), metrics (metrics.ts).
import * as path from "node:path";
import { getNumThreads, manualSeed, setNumThreads } from "../torch";
import { LRScheduler, LinearWarmupCosine } from "../optim/schedule";
import type { BadImage } from "../data/folder";
import { DataLoader } from "../data/loader";
import { Progress, formatDuration } from "./progress";
import { writeMetricsCsv } from "./metrics-csv";
import { describeSplit } from "./split";
import type { ProcessGroup } from "../torch/distributed";
import { attachDataParallel, dataParallelFailure, joinProcessGroup } from "./data-parallel";
import { type StageParallel, attachStageParallel, checkStageParallelOptions } from "./stage-training";
import { buildRunEncoder, describeEncoder } from "./encoders";
import { TrainingError } from "./errors";
import { type MetricsRecord, MetricsWriter } from "./metrics";
import { type TrainModel, buildTrainModel, disposeTrainModel } from "./model";
import { type TrainInput, type TrainOptions, describeMethod, resolveTrainOptions } from "./options";
import { enterPhase } from "./phases";
import { type EvalBatchOptions, knnMonitor, readoutReport, strided } from "./readout";
import type { Results } from "./results";
import { type RankInfo, restoreRun } from "./resume";
import { openRunDirectory, writeJsonAtomic } from "./rundir";
import { type RunData, openRunData } from "./run-data";
import { resumeOptions, runConfigJson } from "./runs";
import { guardedStep } from "./step";
import { type TrainState, dataWaitShare, imagesPerSecond, newTrainState, recordLosses, takeEpochLoss } from "./state";
import { checkCheckpointSpace, gatherStages, writeCheckpoint } from "./train-checkpoint";
import { type TrainContext, type TrainHooks, handleProblem } from "./train-context";

export { phaseOfEpoch } from "./phases";
export type { TrainHooks } from "./train-context";

export interface TrainOutcome {
  /** The run's results (null when interrupted, and on data-parallel ranks other than 0, which do not read out). */
  results: Results | null;
  /** True when training stopped early on request (a checkpoint was written). */
  interrupted: boolean;
  /** The resolved options the run trained with (runDir included). */
  options: TrainOptions;
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
  const { makeLoader, sayBad } = pretrainingLoader(options, data, group, writer, log);
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
    logRunStart(options, data, model, stages, dp === null ? null : worldSize, log);
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

/** Says what the run trains, on what, how, and how it is laid out over ranks. */
function logRunStart(
  options: TrainOptions,
  data: RunData,
  model: TrainModel,
  stages: StageParallel | null,
  dataParallelRanks: number | null,
  log: (m: string) => void,
): void {
  const { stepsPerEpoch } = data;
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
  } else if (dataParallelRanks !== null) {
    log(
      `data parallel: ${dataParallelRanks} ranks x batch ${options.batchSize} = global batch ${options.batchSize * dataParallelRanks} ` +
        `(SyncBatchNorm, NT-Xent over the global batch, gradients averaged); rank 0 writes ${options.runDir}`,
    );
  }
}

/**
 * The pretraining loader's factory (a fresh run makes it before the model, so that its workers
 * start on the first batches while the model is built; a resumed run at its checkpoint's position)
 * and the reporter of bad files, which says each skipped file once, whoever finds it: pretraining,
 * the kNN monitor or the readout. Stage parallel: rank 0 alone feeds the data.
 */
function pretrainingLoader(
  options: TrainOptions,
  data: RunData,
  group: ProcessGroup | null,
  writer: boolean,
  log: (m: string) => void,
): { makeLoader: (start: { epoch: number; batch: number }) => DataLoader | null; sayBad: (bad: BadImage) => void } {
  const worldSize = group?.worldSize ?? 1;
  const saidBad = new Set<string>();
  const sayBad = (bad: BadImage): void => {
    if (saidBad.has(bad.file)) return;
    saidBad.add(bad.file);
    log(`warning: skipped ${bad.file} (${bad.reason})`);
  };
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
  return { makeLoader, sayBad };
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

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Where the progress line of a data-parallel rank other than 0 goes. */
const silentStream = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;

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
