// What the training loop and its parts share (trainer.ts, train-checkpoint.ts, phases.ts), and what
// happens on a non-finite step: the hooks a caller passes, the loop's context, and the diagnosis.
import type { Tensor } from "../torch";
import type { LRScheduler } from "../optim/schedule";
import type { DataLoader } from "../data/loader";
import type { Progress } from "./progress";
import { listCheckpoints } from "./checkpoint";
import type { DataParallel } from "./data-parallel";
import type { StageParallel } from "./stage-training";
import { MAX_CONSECUTIVE_SKIPS, type DivergencePoint, divergenceError } from "./divergence";
import type { TrainingError } from "./errors";
import type { MetricsRecord } from "./metrics";
import type { TrainModel } from "./model";
import type { NonFiniteAction, TrainOptions } from "./options";
import type { EvalBatchOptions } from "./readout";
import type { TrainState } from "./state";

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

/** What the loop and its helpers share. */
export interface TrainContext {
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

/** The diagnosis of a non-finite step at `point`, as an error to throw. */
export function diverged(ctx: TrainContext, point: DivergencePoint, what: string): TrainingError {
  return divergenceError(point, what, {
    learner: ctx.model.learner,
    lastFinite: ctx.state.lastFinite,
    checkpoint: ctx.state.lastCheckpoint ?? listCheckpoints(ctx.options.runDir).at(-1) ?? null,
    runDir: ctx.options.runDir,
    onNonfinite: ctx.onNonfinite,
  });
}

/** Counts a non-finite step: throws the diagnosis with "stop" or after too many skips in a row. */
export function handleProblem(ctx: TrainContext, point: DivergencePoint, text: string): void {
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
