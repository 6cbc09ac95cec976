// One guarded optimizer step: forward and backward through the learner, then the finiteness checks
// (losses, then gradients, then batch-norm buffers); the optimizer steps only when everything is finite. A step found
// non-finite leaves no trace (gradients zeroed; with "skip", batch-norm statistics restored).
// Data parallel adds two points of agreement between the ranks (StepSync): the gradients are
// averaged before the checks, and every rank takes the same decision after them. Stage parallel
// replaces the forward and backward by its rank's part of them (only rank 0 has the views).
import { type Tensor, cat, keep, noGrad, scope } from "../torch";
import type { DType } from "../torch/dtype";
import type { Divergence } from "./errors";
import { firstNonFinite, firstNonFiniteTensor } from "./divergence";
import type { TrainModel } from "./model";

/** What went non-finite in a step, and a sentence saying so. */
export interface StepProblem {
  kind: Divergence["kind"];
  /** 1-based encoder stage. */
  stage: number;
  value?: number;
  parameter?: string;
  text: string;
}

export interface GuardedStepOptions {
  /** Keep a copy of the buffers to restore them if the step is found non-finite. */
  restoreBuffersOnProblem: boolean;
  channelsLast: boolean;
  /** The model's dtype: the views (float32 from the loader) are converted to it. */
  dtype: DType;
  /** Called after backward (and the gradient averaging), before the checks (inspection, fault injection in tests). */
  afterBackward?: () => void;
  /** Data parallel: how the ranks agree on the step (absent: one process). */
  sync?: StepSync;
}

/** What a parallel step shares with the other ranks (data-parallel.ts, stage-training.ts). */
export interface StepSync {
  /**
   * Stage parallel: this rank's forward and backward (the 2N views on rank 0, null elsewhere),
   * instead of learner.step; returns the loss per entry of learner.losses (NaN for other ranks').
   */
  forwardBackward?(views: Tensor | null): Promise<number[]>;
  /** Stage parallel: whether loss i is computed on this rank (the others' are not checked here). */
  ownsLoss?(i: number): boolean;
  /** After backward: every gradient becomes its mean over the ranks. */
  averageGradients?(): Promise<void>;
  /**
   * After the checks: the losses averaged over the ranks (the global batch's), and the problem of
   * the first rank that found one (this rank's own first), so that either every rank steps or none.
   */
  agree(losses: number[], problem: StepProblem | null): Promise<{ losses: number[]; problem: StepProblem | null }>;
}

/** The problem of a step whose losses and gradients are computed, or null when all are finite. */
function findProblem(model: TrainModel, lossValues: number[], ownsLoss: (i: number) => boolean): StepProblem | null {
  const { learner, groups } = model;
  const badLoss = lossValues.findIndex(
    (v, i) => !Number.isFinite(v) && (learner.phase === null || learner.phase === i) && ownsLoss(i),
  );
  if (badLoss >= 0) {
    const stage = learner.losses[badLoss].stage + 1;
    const found: StepProblem = {
      kind: "loss",
      stage,
      value: lossValues[badLoss],
      text: `the loss at stage ${stage} is ${lossValues[badLoss]}`,
    };
    const weights = firstNonFinite(groups, true);
    if (weights !== null) {
      found.text += `; the weights were already non-finite before this step (${weights.name}, ${weights.group.label}): an earlier update overflowed`;
    }
    return found;
  }
  const grad = firstNonFinite(groups);
  if (grad === null) {
    // Finite losses and gradients can still come with overflowed batch-norm statistics.
    const buffer = firstNonFiniteTensor(model.buffers);
    if (buffer === null) return null;
    const prefix = buffer.slice(0, buffer.lastIndexOf(".") + 1);
    const group = groups.find((g) => g.params.some(([n]) => n.startsWith(prefix))) ?? groups[0];
    return {
      kind: "buffer",
      stage: group.stage,
      parameter: buffer,
      text: `the batch-norm statistics ${buffer} (${group.label}) went non-finite in this step's forward pass, while every loss and gradient is finite`,
    };
  }
  return {
    kind: "gradient",
    stage: grad.group.stage,
    parameter: grad.name,
    text: `the gradient of ${grad.name} (${grad.group.label}) is non-finite, while every loss is finite`,
  };
}

/**
 * One step on the two views of a batch: zero the gradients, forward/backward (then, data parallel,
 * average the gradients over the ranks), check, and step the optimizer when every loss and
 * gradient is finite (on every rank). Returns the losses (one per loss stage, NaN where not
 * trained) and the problem found, if any.
 */
export async function guardedStep(
  model: TrainModel,
  views: readonly [Tensor, Tensor] | null,
  options: GuardedStepOptions,
): Promise<{ losses: number[]; problem: StepProblem | null }> {
  const { optimizer, buffers } = model;
  // Skipping a step must leave no trace, batch-norm running statistics included.
  const saved = options.restoreBuffersOnProblem ? noGrad(() => buffers.map(([, b]) => keep(b.clone()))) : null;
  try {
    optimizer.zeroGrad();
    const lossValues = await forwardBackward(model, views, options);
    await options.sync?.averageGradients?.();
    options.afterBackward?.();
    let losses = lossValues;
    const ownsLoss = options.sync?.ownsLoss ?? (() => true);
    let problem = scope(() => findProblem(model, lossValues, ownsLoss));
    if (options.sync !== undefined) ({ losses, problem } = await options.sync.agree(lossValues, problem));
    scope(() => {
      if (problem === null) {
        optimizer.step();
      } else {
        optimizer.zeroGrad();
        if (saved !== null) noGrad(() => buffers.forEach(([, b], i) => b.copy_(saved[i])));
      }
    });
    return { losses, problem };
  } finally {
    for (const t of saved ?? []) t.release();
  }
}

/** The step's forward and backward: the learner's in one process, this rank's part with stage parallel. */
async function forwardBackward(
  model: TrainModel,
  views: readonly [Tensor, Tensor] | null,
  options: GuardedStepOptions,
): Promise<number[]> {
  const both = (): Tensor => {
    let input = cat([views![0], views![1]]);
    if (input.dtype !== options.dtype) input = input.to(options.dtype);
    return options.channelsLast ? input.channelsLast() : input;
  };
  const custom = options.sync?.forwardBackward;
  if (custom === undefined) {
    if (views === null) throw new TypeError("guardedStep: the views are needed in one process");
    return scope(() => model.learner.step(both()).lossValues);
  }
  const input = views === null ? null : keep(scope(both));
  try {
    return await custom(input);
  } finally {
    input?.dispose();
  }
}
