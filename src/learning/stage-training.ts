// `train({ parallel: "stages" })` (`loco launch --nproc N -- train --parallel stages`): the
// trainer's stage-parallel wiring around StageParallelWorker (docs/distributed.md, "Stage parallel
// training"). Every rank builds the same model (rank 0's state broadcast) and trains only its own
// contiguous stages and their decoders; rank 0 alone loads the data and feeds the views. The
// ranks agree on every step's decision and on stops as in data parallel; before a checkpoint, the
// kNN monitor and the readout, every rank's stages, buffers and optimizer state are gathered to
// rank 0, so that its model is whole and its checkpoint is the file one process writes.
import { type Tensor, cat, empty, keep, noGrad, scope, tensor } from "../torch";
import type { ProcessGroup } from "../torch/distributed";
import { broadcastState } from "../parallel/gradients";
import { type DataParallel, agreeOnStep, agreeToStop } from "./data-parallel";
import { TrainingError } from "./errors";
import type { StageRankRecord } from "./metrics";
import { type TrainModel, modelState } from "./model";
import type { TrainOptions } from "./options";
import { type RankStages, assignStages } from "./stage-layout";
import { StageParallelWorker } from "./stage-parallel";

/** What the trainer holds for a stage-parallel run. */
export interface StageParallel extends DataParallel {
  mode: "stages";
  worker: StageParallelWorker;
  /** Every rank's stages (0-based, inclusive), as checkpoints record them. */
  layout: RankStages[];
  /** Every rank: its stages, buffers and optimizer state copied into rank 0's model and optimizer. */
  gather(): Promise<void>;
  /** Every rank's `stage-rank` figures since the last call (rank 0 gets them, the others []). */
  rankRecords(step: number): Promise<StageRankRecord[]>;
  /** Every rank, after the last step: completes the messages in flight and leaves the group. */
  leave(): Promise<void>;
}

/** Refuses, before the rendezvous, a stage-parallel run the worker cannot train. */
export function checkStageParallelOptions(options: TrainOptions): void {
  if (options.parallel === "stages" && options.learning.schedule === "sequential") {
    throw new TrainingError(
      "--parallel stages trains every stage at every step: the sequential schedule (--schedule sequential) is not supported",
      2,
    );
  }
}

/**
 * Makes `model` this rank's part of a stage-parallel model: rank 0's parameters and buffers copied
 * to every rank, the stages assigned as evenly as possible (assignStages), and the step run by a
 * StageParallelWorker with `options.stageSchedule`.
 */
export async function attachStageParallel(
  group: ProcessGroup,
  model: TrainModel,
  options: TrainOptions,
): Promise<StageParallel> {
  for (const module of [model.encoder, model.learner.decoders]) await broadcastState(group, module);
  const { learner } = model;
  let worker: StageParallelWorker;
  let layout: RankStages[];
  try {
    layout = assignStages(learner.stages.length, group.worldSize);
    worker = new StageParallelWorker(learner, group, { schedule: options.stageSchedule ?? "sync", layout });
  } catch (error) {
    throw new TrainingError(`--parallel stages: ${(error as Error).message}`, 2);
  }
  const { first, last } = worker.plan.stages;
  const ownModules = [...learner.stages.slice(first, last + 1), ...worker.plan.losses.map((i) => learner.decoder(i))];
  const own = new Set<Tensor>(ownModules.flatMap((m) => [...m.parameters(), ...m.buffers()]));
  const ownsLoss = (i: number): boolean => worker.plan.losses.includes(i);
  return {
    mode: "stages",
    group,
    rank: group.rank,
    worldSize: group.worldSize,
    worker,
    layout,
    sync: {
      forwardBackward: async (views) => (await worker.step(views)).lossValues,
      ownsLoss,
      // Each loss is computed on one rank: the sum over ranks (0 from the others) is the loss.
      agree: (losses, problem) =>
        agreeOnStep(
          group,
          losses.map((v, i) => (ownsLoss(i) ? v : 0)),
          problem,
          "sum",
        ),
    },
    agreeToStop: (requested) => agreeToStop(group, requested),
    gather: () => gatherToRankZero(group, model, own),
    rankRecords: (step) => worker.rankRecords(step),
    leave: async () => {
      await worker.finish();
      await group.destroy();
    },
  };
}

/** Tags of the gather's messages (the worker's use 2 and 16 + reach). */
const GATHER_TAG = 1000;

/** What a rank sends rank 0: names, dtypes and shapes of the tensors packed in one float64 tensor. */
interface GatherDescription {
  model: [string, Tensor["dtype"], number[]][];
  optimizer: [string, Tensor["dtype"], number[]][];
  /** The optimizer's numbers (Adam's step) by parameter index. */
  numbers: Record<string, Record<string, number>>;
}

/**
 * Rank r > 0 sends its own model tensors and optimizer state (three messages: sizes, a JSON
 * description, every tensor packed as float64, exact for float32 and for counts below 2^53); rank 0
 * copies them into its model and loads the merged optimizer state.
 */
async function gatherToRankZero(group: ProcessGroup, model: TrainModel, own: Set<Tensor>): Promise<void> {
  const { optimizer } = model;
  const params = optimizer.parameters();
  const ownedIndex = (index: string): boolean => own.has(params[Number(index)]);
  const ownState = optimizer.stateDict({ clone: group.rank === 0 });
  const optimizerEntries = [...ownState.tensors].filter(([key]) => ownedIndex(key.split(".")[1]));
  const numbers = Object.fromEntries(Object.entries(ownState.meta.state).filter(([i]) => ownedIndex(i)));
  if (group.rank !== 0) {
    const modelEntries = [...modelState(model)].filter(([, t]) => own.has(t));
    const describe = (entries: [string, Tensor][]): [string, Tensor["dtype"], number[]][] =>
      entries.map(([k, t]) => [k, t.dtype, t.shape]);
    const description: GatherDescription = {
      model: describe(modelEntries),
      optimizer: describe(optimizerEntries),
      numbers,
    };
    await sendPacked(
      group,
      description,
      [...modelEntries, ...optimizerEntries].map(([, t]) => t),
    );
    return;
  }
  // Rank 0: its own optimizer state (clones) plus every other rank's.
  const merged = new Map<string, Tensor>();
  for (const [key, t] of ownState.tensors) {
    if (ownedIndex(key.split(".")[1])) merged.set(key, t);
    else t.dispose();
  }
  const mergedNumbers = { ...numbers };
  try {
    const current = modelState(model);
    for (let src = 1; src < group.worldSize; src++) {
      const { description, flat } = await receivePacked(group, src);
      try {
        let offset = 0;
        const next = (shape: number[]): Tensor => {
          const n = shape.reduce((a, b) => a * b, 1);
          const slice = flat.narrow(0, offset, n).view(shape);
          offset += n;
          return slice;
        };
        noGrad(() =>
          scope(() => {
            for (const [name, , shape] of description.model) {
              const target = current.get(name);
              if (target === undefined) throw new Error(`stage parallel: rank ${src} sent an unknown tensor '${name}'`);
              target.copy_(next(shape));
            }
            for (const [key, dtype, shape] of description.optimizer) merged.set(key, keep(next(shape).to(dtype)));
          }),
        );
        Object.assign(mergedNumbers, description.numbers);
      } finally {
        flat.dispose();
      }
    }
    optimizer.loadStateDict({ tensors: merged, meta: { ...ownState.meta, state: mergedNumbers } });
  } finally {
    for (const t of merged.values()) t.dispose();
  }
}

async function sendPacked(group: ProcessGroup, description: GatherDescription, tensors: Tensor[]): Promise<void> {
  const json = Buffer.from(JSON.stringify(description));
  const flat = keep(
    noGrad(() =>
      scope(() =>
        tensors.length === 0
          ? empty([0], { dtype: "float64" })
          : cat(tensors.map((t) => t.detach().to("float64").reshape(-1))),
      ),
    ),
  );
  const sizes = keep(tensor([json.length, flat.numel()], { dtype: "float64" }));
  const bytes = keep(tensor([...json], { dtype: "uint8" }));
  try {
    await group.send(sizes, 0, { tag: GATHER_TAG });
    await group.send(bytes, 0, { tag: GATHER_TAG + 1 });
    await group.send(flat, 0, { tag: GATHER_TAG + 2 });
  } finally {
    for (const t of [flat, sizes, bytes]) t.dispose();
  }
}

async function receivePacked(
  group: ProcessGroup,
  src: number,
): Promise<{ description: GatherDescription; flat: Tensor }> {
  const sizes = keep(empty([2], { dtype: "float64" }));
  let jsonLength: number;
  let count: number;
  try {
    await group.recv(sizes, src, { tag: GATHER_TAG });
    [jsonLength, count] = sizes.toArray();
  } finally {
    sizes.dispose();
  }
  const bytes = keep(empty([jsonLength], { dtype: "uint8" }));
  let description: GatherDescription;
  try {
    await group.recv(bytes, src, { tag: GATHER_TAG + 1 });
    description = JSON.parse(Buffer.from(bytes.toArray()).toString("utf8")) as GatherDescription;
  } finally {
    bytes.dispose();
  }
  const flat = keep(empty([count], { dtype: "float64" }));
  try {
    await group.recv(flat, src, { tag: GATHER_TAG + 2 });
  } catch (error) {
    flat.dispose();
    throw error;
  }
  return { description, flat };
}
