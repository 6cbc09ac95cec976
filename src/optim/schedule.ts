// Learning-rate schedules (SimCLR's linear warmup + cosine decay), a scheduler that applies one to
// an optimizer's groups, and SimCLR's batch-size scaling of the learning rate.

/** A learning rate as a function of the number of optimizer steps already taken. */
export interface LRSchedule {
  lrAt(step: number): number;
}

export interface LinearWarmupCosineOptions {
  /** Steps of linear warmup (0: start directly with the cosine). */
  warmupSteps: number;
  /** Total steps; the cosine runs from warmupSteps to totalSteps and stays at finalLr after. */
  totalSteps: number;
  /** The learning rate at the end of warmup. */
  baseLr: number;
  /** The learning rate at totalSteps (default 0). */
  finalLr?: number;
  /** Warmup starts at baseLr·warmupStartFactor (default 0, as SimCLR: the first step has lr 0). */
  warmupStartFactor?: number;
}

function checkFinite(name: string, value: unknown, min = -Infinity): void {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min) {
    throw new RangeError(`LinearWarmupCosine: ${name} must be a finite number >= ${min}, got ${String(value)}`);
  }
}

/**
 * SimCLR's schedule. For step s (the number of steps already taken, starting at 0):
 *
 *     s < W:       lr = baseLr·(f + (1 − f)·s/W)                         (f = warmupStartFactor)
 *     W ≤ s < T:   lr = finalLr + (baseLr − finalLr)·½(1 + cos(π·(s − W)/(T − W)))
 *     s ≥ T:       lr = finalLr
 *
 * so (when T > W) lrAt(W) = baseLr, lrAt(W + (T − W)/2) = (baseLr + finalLr)/2 and lrAt(T) = finalLr.
 */
export class LinearWarmupCosine implements LRSchedule {
  readonly warmupSteps: number;
  readonly totalSteps: number;
  readonly baseLr: number;
  readonly finalLr: number;
  readonly warmupStartFactor: number;

  constructor(options: LinearWarmupCosineOptions) {
    const { warmupSteps, totalSteps, baseLr, finalLr = 0, warmupStartFactor = 0 } = options;
    if (!Number.isInteger(warmupSteps) || warmupSteps < 0) {
      throw new RangeError(`LinearWarmupCosine: warmupSteps must be an integer >= 0, got ${String(warmupSteps)}`);
    }
    if (!Number.isInteger(totalSteps) || totalSteps < warmupSteps) {
      throw new RangeError(
        `LinearWarmupCosine: totalSteps must be an integer >= warmupSteps (${warmupSteps}), got ${String(totalSteps)}`,
      );
    }
    checkFinite("baseLr", baseLr, 0);
    checkFinite("finalLr", finalLr, 0);
    checkFinite("warmupStartFactor", warmupStartFactor, 0);
    this.warmupSteps = warmupSteps;
    this.totalSteps = totalSteps;
    this.baseLr = baseLr;
    this.finalLr = finalLr;
    this.warmupStartFactor = warmupStartFactor;
  }

  lrAt(step: number): number {
    if (!Number.isFinite(step) || step < 0)
      throw new RangeError(`LinearWarmupCosine.lrAt: step must be >= 0, got ${step}`);
    const { warmupSteps: w, totalSteps: t, baseLr, finalLr } = this;
    if (step < w) {
      const f = this.warmupStartFactor;
      return baseLr * (f + ((1 - f) * step) / w);
    }
    if (step >= t) return finalLr;
    const progress = (step - w) / (t - w);
    return finalLr + (baseLr - finalLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
  }
}

/** A constant learning rate (for runs without a schedule). */
export class ConstantLR implements LRSchedule {
  constructor(readonly lr: number) {}
  lrAt(): number {
    return this.lr;
  }
}

/** What LRScheduler needs from an optimizer. */
export interface HasParamGroups {
  readonly paramGroups: { lr: number }[];
}

export interface LRSchedulerState {
  /** Optimizer steps taken so far. */
  step: number;
}

/**
 * Sets the learning rate of an optimizer's groups from a schedule: one schedule for all groups, or
 * one per group. The constructor applies lrAt(0); call step() after each optimizer.step():
 *
 *     opt.step(); sched.step();   // the next optimizer step uses lrAt(sched.stepCount)
 */
export class LRScheduler {
  #step = 0;
  readonly schedules: readonly LRSchedule[];

  constructor(
    readonly optimizer: HasParamGroups,
    schedule: LRSchedule | readonly LRSchedule[],
  ) {
    const list = Array.isArray(schedule) ? [...schedule] : [schedule as LRSchedule];
    const groups = optimizer.paramGroups.length;
    if (Array.isArray(schedule) && list.length !== groups) {
      throw new Error(`LRScheduler: got ${list.length} schedules for ${groups} parameter groups`);
    }
    this.schedules = list;
    this.apply();
  }

  /** Optimizer steps taken so far (the step the current learning rates belong to). */
  get stepCount(): number {
    return this.#step;
  }

  /** The learning rate of each group now. */
  get lrs(): number[] {
    return this.optimizer.paramGroups.map((g) => g.lr);
  }

  /** Advances one step and sets the learning rates for the next optimizer step. */
  step(): void {
    this.#step += 1;
    this.apply();
  }

  /** Jumps to a step (e.g. when resuming) and sets the learning rates for it. */
  setStep(step: number): void {
    if (!Number.isInteger(step) || step < 0)
      throw new RangeError(`LRScheduler: step must be an integer >= 0, got ${step}`);
    this.#step = step;
    this.apply();
  }

  stateDict(): LRSchedulerState {
    return { step: this.#step };
  }

  loadStateDict(state: LRSchedulerState): void {
    if (typeof state !== "object" || state === null)
      throw new TypeError("LRScheduler.loadStateDict: expected { step }");
    this.setStep(state.step);
  }

  private apply(): void {
    this.optimizer.paramGroups.forEach((g, i) => {
      g.lr = this.schedules[this.schedules.length === 1 ? 0 : i].lrAt(this.#step);
    });
  }
}

/** SimCLR's learning-rate scaling: "linear" lr = baseLr·batchSize/256, "sqrt" lr = baseLr·√batchSize. */
export type LRScaling = "linear" | "sqrt";

/**
 * SimCLR's learning rate for a batch size: linear scaling (the paper's LARS runs use baseLr 0.3:
 * lr = 0.3·B/256) or square-root scaling (baseLr 0.075: lr = 0.075·√B, better for small batches).
 */
export function scaledLearningRate(baseLr: number, batchSize: number, scaling: LRScaling = "linear"): number {
  if (!Number.isInteger(batchSize) || batchSize <= 0) {
    throw new RangeError(`scaledLearningRate: batchSize must be a positive integer, got ${String(batchSize)}`);
  }
  if (typeof baseLr !== "number" || !Number.isFinite(baseLr) || baseLr < 0) {
    throw new RangeError(`scaledLearningRate: baseLr must be a finite number >= 0, got ${String(baseLr)}`);
  }
  switch (scaling) {
    case "linear":
      return (baseLr * batchSize) / 256;
    case "sqrt":
      return baseLr * Math.sqrt(batchSize);
    default:
      throw new RangeError(`scaledLearningRate: scaling must be "linear" or "sqrt", got ${JSON.stringify(scaling)}`);
  }
}
