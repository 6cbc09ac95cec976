// `train({ parallel: "data" })` (`loco launch --nproc N -- train --parallel data`): the trainer's
// data-parallel wiring, built from src/parallel's blocks (docs/distributed.md, "Data parallel").
// Every rank builds the same model (rank 0's state broadcast), trains it on its shard of every
// global batch with SyncBatchNorm and NT-Xent over the global batch, and averages the gradients
// before the step; the ranks agree on every decision that could otherwise split them (a
// non-finite step, a stop request). Rank 0 alone writes the run directory.
import { type Tensor, tensor } from "../torch";
import { type ProcessGroup, initProcessGroup } from "../torch/distributed";
import { GradientAllReduce, broadcastState } from "../parallel/gradients";
import { convertSyncBatchNorm } from "../parallel/sync-batchnorm";
import { globalNtXent } from "../parallel/ntxent";
import type { Divergence } from "./errors";
import { TrainingError } from "./errors";
import type { TrainModel } from "./model";
import type { TrainOptions } from "./options";
import type { StepProblem, StepSync } from "./step";

/** What the trainer holds for a run on several ranks, data or stage parallel (null for one process). */
export interface DataParallel {
  /** "data" or "stages" (stage-training.ts), as in messages: "data-parallel", "stage-parallel". */
  mode: "data" | "stages";
  group: ProcessGroup;
  rank: number;
  worldSize: number;
  /** The gradient averaging and the per-step agreement, for guardedStep. */
  sync: StepSync;
  /** True on every rank when any rank was asked to stop (Ctrl-C reaches the ranks at different steps). */
  agreeToStop(requested: boolean): Promise<boolean>;
}

/**
 * Joins the process group of a data- or stage-parallel run (from $RANK, $WORLD_SIZE, $MASTER_ADDR,
 * …, as `loco launch` sets them), or refuses a run that cannot use it. Null for a one-process run.
 */
export async function joinProcessGroup(options: TrainOptions): Promise<ProcessGroup | null> {
  const mode = options.parallel ?? "none";
  if (mode === "none") {
    const worldSize = Number(process.env.WORLD_SIZE ?? "1");
    if (worldSize > 1) {
      throw new TrainingError(
        `WORLD_SIZE is ${worldSize}: this process is one of several ranks, but the run is not parallel; ` +
          'pass --parallel data or stages (parallel: "data") to train one model on all ranks',
        2,
      );
    }
    return null;
  }
  try {
    return await initProcessGroup();
  } catch (error) {
    throw new TrainingError(`--parallel ${mode}: ${(error as Error).message}`);
  }
}

/**
 * Makes `model` one replica of a data-parallel model: rank 0's parameters and buffers copied to
 * every rank, every batch norm of the encoder and decoders synchronised (SyncBatchNorm), every
 * stage loss NT-Xent over the global batch, and the gradients averaged before the step.
 */
export async function attachDataParallel(group: ProcessGroup, model: TrainModel): Promise<DataParallel> {
  for (const module of [model.encoder, model.learner.decoders]) {
    await broadcastState(group, module);
    convertSyncBatchNorm(module, group);
  }
  model.learner.contrastiveLoss = (z, temperature) => globalNtXent(z, temperature, group);
  const gradients = new GradientAllReduce(
    group,
    model.named.map(([, p]) => p),
  );
  return {
    mode: "data",
    group,
    rank: group.rank,
    worldSize: group.worldSize,
    sync: {
      averageGradients: () => gradients.averageGradients(),
      agree: (losses, problem) => agreeOnStep(group, losses, problem, "mean"),
    },
    agreeToStop: (requested) => agreeToStop(group, requested),
  };
}

/** True on every rank when any rank was asked to stop (one all-reduce). */
export async function agreeToStop(group: ProcessGroup, requested: boolean): Promise<boolean> {
  const flag = tensor([requested ? 1 : 0], { dtype: "float32" });
  try {
    await group.allReduce(flag, { op: "max" });
    return flag.item() > 0;
  } finally {
    flag.release();
  }
}

const PROBLEM_KINDS: readonly Divergence["kind"][] = ["loss", "gradient", "weights", "buffer"];

/**
 * One all-reduce: the losses summed, then averaged ("mean", data parallel: each rank's loss is its
 * share of the global NT-Xent) or not ("sum", stage parallel: each loss is on one rank, 0 on the
 * others), and, per rank, the kind and stage of the problem it found. A rank that found none takes
 * the first other rank's, so that every rank skips (or stops) together.
 */
export async function agreeOnStep(
  group: ProcessGroup,
  losses: number[],
  problem: StepProblem | null,
  combine: "mean" | "sum",
): Promise<{ losses: number[]; problem: StepProblem | null }> {
  const { rank, worldSize } = group;
  const values = new Array<number>(losses.length + 2 * worldSize).fill(0);
  losses.forEach((l, i) => (values[i] = l));
  if (problem !== null) {
    values[losses.length + 2 * rank] = PROBLEM_KINDS.indexOf(problem.kind) + 1;
    values[losses.length + 2 * rank + 1] = problem.stage;
  }
  const shared: Tensor = tensor(values, { dtype: "float64" });
  let reduced: number[];
  try {
    await group.allReduce(shared, { op: "sum" });
    reduced = shared.toArray();
  } finally {
    shared.release();
  }
  const global = reduced.slice(0, losses.length).map((sum) => (combine === "mean" ? sum / worldSize : sum));
  if (problem !== null) return { losses: global, problem };
  for (let r = 0; r < worldSize; r++) {
    const kind = PROBLEM_KINDS[reduced[losses.length + 2 * r] - 1];
    if (kind === undefined) continue;
    const stage = reduced[losses.length + 2 * r + 1];
    return {
      losses: global,
      problem: { kind, stage, text: `rank ${r} found a non-finite ${kind} at stage ${stage} in this step` },
    };
  }
  return { losses: global, problem: null };
}

/**
 * The error to report when a collective failed (a rank died or stalled): the group's diagnosis
 * (which rank, which operation), what is left on disk and how to continue. `step`: steps done.
 */
export function dataParallelFailure(
  dp: DataParallel,
  error: unknown,
  step: number,
  runDir: string,
  lastCheckpoint: string | null,
): TrainingError | null {
  if (dp.group.failure === null) return null;
  return new TrainingError(
    `${dp.mode === "data" ? "data" : "stage"}-parallel training stopped in step ${step + 1} on rank ${dp.rank} of ${dp.worldSize}: ${(error as Error).message}; ` +
      (lastCheckpoint === null ? "no checkpoint was written yet" : `the last checkpoint ${lastCheckpoint} is intact`) +
      `; continue with: loco launch --nproc ${dp.worldSize} -- train --resume ${runDir}`,
  );
}
