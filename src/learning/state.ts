// The trainer's mutable state in one typed record: step, timings, skip counts and per-loss-stage
// loss statistics. It travels in every checkpoint's `extra` and is restored on resume.

export interface LastFinite {
  loss: number;
  step: number;
}

export interface TrainState {
  /** Optimizer steps done (skipped steps included). */
  step: number;
  trainSeconds: number;
  waitSeconds: number;
  skippedSteps: number;
  consecutiveSkips: number;
  /** Per loss stage: this epoch's sum and count of finite losses. */
  lossSums: number[];
  lossCounts: number[];
  /** Per loss stage: the last finite loss and its step (null: none yet). */
  lastFinite: (LastFinite | null)[];
  /** The losses of the last step that was not skipped. */
  lastLosses: number[];
  /** The newest checkpoint this run wrote or resumed from, and its step. */
  lastCheckpoint: string | null;
  checkpointStep: number;
  /** Stage parallel: the step at which every rank's stages were last gathered to rank 0. */
  gatheredStep: number;
}

export function newTrainState(lossStages: number): TrainState {
  return {
    step: 0,
    trainSeconds: 0,
    waitSeconds: 0,
    skippedSteps: 0,
    consecutiveSkips: 0,
    lossSums: new Array<number>(lossStages).fill(0),
    lossCounts: new Array<number>(lossStages).fill(0),
    lastFinite: new Array<LastFinite | null>(lossStages).fill(null),
    lastLosses: [],
    lastCheckpoint: null,
    checkpointStep: -1,
    gatheredStep: -1,
  };
}

/** The part of the state a checkpoint keeps (its `extra` field). */
export function checkpointExtra(state: TrainState): Record<string, unknown> {
  const { trainSeconds, waitSeconds, skippedSteps, consecutiveSkips, lossSums, lossCounts, lastFinite } = state;
  return { trainSeconds, waitSeconds, skippedSteps, consecutiveSkips, lossSums, lossCounts, lastFinite };
}

/** Restores what checkpointExtra kept (missing or ill-shaped fields keep their fresh values). */
export function restoreExtra(state: TrainState, extra: Record<string, unknown>): void {
  const lossStages = state.lossSums.length;
  state.trainSeconds = Number(extra.trainSeconds ?? 0);
  state.waitSeconds = Number(extra.waitSeconds ?? 0);
  state.skippedSteps = Number(extra.skippedSteps ?? 0);
  state.consecutiveSkips = Number(extra.consecutiveSkips ?? 0);
  const numbers = (v: unknown): number[] | null =>
    Array.isArray(v) && v.length === lossStages && v.every((x) => typeof x === "number") ? (v as number[]) : null;
  state.lossSums = numbers(extra.lossSums) ?? state.lossSums;
  state.lossCounts = numbers(extra.lossCounts) ?? state.lossCounts;
  if (Array.isArray(extra.lastFinite) && extra.lastFinite.length === lossStages)
    state.lastFinite = extra.lastFinite as (LastFinite | null)[];
}

/** Adds a step's finite losses to the epoch's statistics. */
export function recordLosses(state: TrainState, losses: number[]): void {
  losses.forEach((v, i) => {
    if (!Number.isFinite(v)) return;
    state.lossSums[i] += v;
    state.lossCounts[i]++;
    state.lastFinite[i] = { loss: v, step: state.step };
  });
  state.lastLosses = losses;
}

/** The epoch's mean loss per loss stage (NaN: not trained this epoch); resets the sums. */
export function takeEpochLoss(state: TrainState): number[] {
  const mean = state.lossSums.map((s, i) => (state.lossCounts[i] > 0 ? s / state.lossCounts[i] : NaN));
  state.lossSums = state.lossSums.map(() => 0);
  state.lossCounts = state.lossCounts.map(() => 0);
  return mean;
}

export const imagesPerSecond = (state: TrainState, batchSize: number): number =>
  (state.step * batchSize) / Math.max(state.trainSeconds, 1e-9);

export const dataWaitShare = (state: TrainState): number => state.waitSeconds / Math.max(state.trainSeconds, 1e-9);
