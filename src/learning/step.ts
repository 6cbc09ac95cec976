// One guarded optimizer step: forward and backward through the learner, then the finiteness checks
// (losses, then gradients, then batch-norm buffers); the optimizer steps only when everything is finite. A step found
// non-finite leaves no trace (gradients zeroed; with "skip", batch-norm statistics restored).
import { type Tensor, cat, noGrad, scope } from "../torch";
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
  /** Called after backward, before the checks (inspection, fault injection in tests). */
  afterBackward?: () => void;
}

/** The problem of a step whose losses and gradients are computed, or null when all are finite. */
function findProblem(model: TrainModel, lossValues: number[]): StepProblem | null {
  const { learner, groups } = model;
  const badLoss = lossValues.findIndex(
    (v, i) => !Number.isFinite(v) && (learner.phase === null || learner.phase === i),
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
 * One step on the two views of a batch: zero the gradients, forward/backward, check, and step the
 * optimizer when every loss and gradient is finite. Returns the losses (one per loss stage, NaN
 * where not trained) and the problem found, if any.
 */
export function guardedStep(
  model: TrainModel,
  views: readonly [Tensor, Tensor],
  options: GuardedStepOptions,
): { losses: number[]; problem: StepProblem | null } {
  const { learner, optimizer, buffers } = model;
  return scope(() => {
    let both = cat([views[0], views[1]]);
    if (options.channelsLast) both = both.channelsLast();
    optimizer.zeroGrad();
    // Skipping a step must leave no trace, batch-norm running statistics included.
    const saved = options.restoreBuffersOnProblem ? noGrad(() => buffers.map(([, b]) => b.clone())) : null;
    const { lossValues } = learner.step(both);
    options.afterBackward?.();
    const problem = findProblem(model, lossValues);
    if (problem === null) {
      optimizer.step();
    } else {
      optimizer.zeroGrad();
      if (saved !== null) noGrad(() => buffers.forEach(([, b], i) => b.copy_(saved[i])));
    }
    return { losses: lossValues, problem };
  });
}
