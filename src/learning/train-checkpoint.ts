// Checkpoints during training: room for them before the first step, and one per step at most,
// gathered from every rank of a stage-parallel run first; non-finite weights are never saved.
import { type Tensor, defaultGenerator } from "../torch";
import { bytesPerElement } from "../torch/dtype";
import {
  type CheckpointMeta,
  CHECKPOINT_FORMAT,
  checkpointDir,
  checkpointPath,
  listCheckpoints,
  saveCheckpoint,
} from "./checkpoint";
import { firstNonFiniteTensor } from "./divergence";
import { TrainingError } from "./errors";
import { type TrainModel, modelState } from "./model";
import type { TrainOptions } from "./options";
import { checkFreeSpace, formatBytes } from "./rundir";
import { checkpointExtra } from "./state";
import { type TrainContext, diverged } from "./train-context";

/** Room for the checkpoints before anything is trained: model + optimizer slots, K kept + 1 being written. */
export function checkCheckpointSpace(options: TrainOptions, model: TrainModel): void {
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

/** Stage parallel: every rank's stages into rank 0's model and optimizer (once per step; every rank calls it). */
export async function gatherStages(ctx: TrainContext): Promise<void> {
  if (ctx.stages === null || ctx.state.gatheredStep === ctx.state.step) return;
  await ctx.stages.gather();
  ctx.state.gatheredStep = ctx.state.step;
}

/** Writes a checkpoint of the current step (once per step); refuses to save non-finite weights. */
export async function writeCheckpoint(ctx: TrainContext): Promise<string> {
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
