// Batch normalisation (BatchNorm1d, BatchNorm2d) with PyTorch's semantics, parameter and buffer
// names; forwardReLU runs it with the ReLU (and a residual) after it as one node where it can.
import type { Tensor } from "../torch/tensor";
import { ones, zeros } from "../torch/creation";
import { noGrad } from "../torch/autograd";
import type { DType } from "../torch/dtype";
import * as F from "../torch/functional";
import { Module } from "./module";
import * as init from "./init";
import { checkPositiveInt } from "./layers";
import { stashed } from "./stash";

export interface BatchNormOptions {
  eps?: number;
  /**
   * Weight of the new batch statistic in the running average (default 0.1):
   * running = (1 − momentum)·running + momentum·batch. null: cumulative average (1/num_batches_tracked).
   */
  momentum?: number | null;
  /** Learnable scale `weight` (init 1) and shift `bias` (init 0); default true. */
  affine?: boolean;
  /** Keep running_mean / running_var / num_batches_tracked buffers (default true). */
  trackRunningStats?: boolean;
  dtype?: DType;
}

/** Nesting depth of withoutRunningStatsUpdate calls (0: batch norms update as usual). */
let runningStatsFrozen = 0;

/**
 * Runs `fn` with every batch norm's running statistics left as they are: in training mode a batch
 * norm still normalises with the batch's statistics (so outputs and gradients are those of a
 * training forward), but it neither updates running_mean / running_var nor counts the batch. For
 * recomputing a forward pass whose batch was already counted (the router's `overlap: "recompute"`).
 */
export function withoutRunningStatsUpdate<T>(fn: () => T): T {
  runningStatsFrozen++;
  try {
    return fn();
  } finally {
    runningStatsFrozen--;
  }
}

/**
 * Batch normalisation with PyTorch's semantics: in training mode (or without running statistics)
 * it normalises with the batch's statistics and, when tracking, updates running_mean, running_var
 * (unbiased batch variance) and increments num_batches_tracked; in eval mode it uses the running
 * statistics.
 */
export abstract class BatchNormBase extends Module {
  readonly numFeatures: number;
  readonly eps: number;
  readonly momentum: number | null;
  readonly affine: boolean;
  readonly trackRunningStats: boolean;

  constructor(numFeatures: number, options: BatchNormOptions = {}) {
    super();
    checkPositiveInt(`${new.target.name}: numFeatures`, numFeatures);
    this.numFeatures = numFeatures;
    this.eps = options.eps ?? 1e-5;
    this.momentum = options.momentum === undefined ? 0.1 : options.momentum;
    if (!(this.eps > 0)) throw new RangeError(`${new.target.name}: eps must be > 0, got ${this.eps}`);
    if (this.momentum !== null && !(this.momentum >= 0 && this.momentum <= 1)) {
      throw new RangeError(`${new.target.name}: momentum must be in [0, 1] or null, got ${this.momentum}`);
    }
    this.affine = options.affine ?? true;
    this.trackRunningStats = options.trackRunningStats ?? true;
    const dtype = options.dtype ?? "float32";
    this.registerParameter("weight", this.affine ? ones([numFeatures], { dtype }) : null);
    this.registerParameter("bias", this.affine ? zeros([numFeatures], { dtype }) : null);
    this.registerBuffer("running_mean", this.trackRunningStats ? zeros([numFeatures], { dtype }) : null);
    this.registerBuffer("running_var", this.trackRunningStats ? ones([numFeatures], { dtype }) : null);
    this.registerBuffer("num_batches_tracked", this.trackRunningStats ? zeros([], { dtype: "int64" }) : null);
  }

  /**
   * Training-mode normalisation over every rank's batch (SyncBatchNorm), installed by
   * parallel.convertSyncBatchNorm: given this layer, the input and the running-statistics factor,
   * it returns the output and updates the running statistics. Null: this process's batch only.
   */
  crossRankForward: ((layer: BatchNormBase, input: Tensor, factor: number) => Tensor) | null = null;

  get weight(): Tensor | null {
    return this.optionalParam("weight");
  }
  get bias(): Tensor | null {
    return this.optionalParam("bias");
  }
  get runningMean(): Tensor | null {
    return this.buffer("running_mean");
  }
  get runningVar(): Tensor | null {
    return this.buffer("running_var");
  }
  get numBatchesTracked(): Tensor | null {
    return this.buffer("num_batches_tracked");
  }

  /** Running statistics back to mean 0, variance 1, no batches tracked. */
  resetRunningStats(): void {
    noGrad(() => {
      this.runningMean?.zero_();
      this.runningVar?.fill_(1);
      this.numBatchesTracked?.zero_();
    });
  }

  /** Running statistics reset, weight 1, bias 0 (PyTorch's reset_parameters). */
  resetParameters(): void {
    this.resetRunningStats();
    if (this.weight) init.ones_(this.weight);
    if (this.bias) init.zeros_(this.bias);
  }

  protected override optionalStateKeys(): readonly string[] {
    return this.trackRunningStats ? ["num_batches_tracked"] : [];
  }

  /** Throws unless the input's rank suits this layer. */
  protected abstract checkInput(input: Tensor): void;

  override forward(input: Tensor): Tensor {
    return this.#normalize(input, null);
  }

  /**
   * relu(forward(input) + residual), residual optional: what this layer followed by a residual
   * addition and `new ReLU(true)` computes. In training mode they run as one autograd node where
   * F.batchNormReLU can (faster; the same values).
   */
  forwardReLU(input: Tensor, residual: Tensor | null = null): Tensor {
    return this.#normalize(input, { residual });
  }

  /** Batch norm of `input`; then, given `relu`, the residual added and ReLU applied. */
  #normalize(input: Tensor, relu: { residual: Tensor | null } | null): Tensor {
    this.checkInput(input);
    const s = input.shape;
    if (s[1] !== this.numFeatures) {
      throw new RangeError(
        `${this.constructor.name}: expected ${this.numFeatures} channels in dim 1, got shape [${s.join(", ")}]`,
      );
    }
    const useBatchStats = this.training || (this.runningMean === null && this.runningVar === null);
    if (useBatchStats) {
      const perChannel = s.reduce((a, b) => a * b, 1) / s[1];
      if (perChannel <= 1) {
        throw new RangeError(
          `${this.constructor.name}: expected more than 1 value per channel when training, got input shape [${s.join(", ")}]`,
        );
      }
    }
    const updating = this.training && runningStatsFrozen === 0;
    let factor = this.momentum ?? 0;
    const tracked = this.numBatchesTracked;
    if (updating && tracked !== null) {
      noGrad(() => tracked.add_(1));
      if (this.momentum === null) factor = 1 / tracked.item();
    }
    if (this.training && this.crossRankForward !== null) {
      const out = this.crossRankForward(this, input, factor);
      if (relu?.residual) out.add_(relu.residual);
      return relu ? out.relu_() : out;
    }
    // Running statistics are passed only when they are used or updated, as PyTorch does.
    const passStats = !this.training || (this.trackRunningStats && updating);
    const options = {
      weight: stashed(this.weight),
      bias: stashed(this.bias),
      training: useBatchStats,
      momentum: factor,
      eps: this.eps,
    };
    const [mean, variance] = passStats ? [this.runningMean, this.runningVar] : [null, null];
    if (relu) return F.batchNormReLU(input, mean, variance, { ...options, residual: relu.residual });
    return F.batchNorm(input, mean, variance, options);
  }

  override extraRepr(): string {
    return `${this.numFeatures}, eps=${this.eps}, momentum=${this.momentum}, affine=${this.affine ? "True" : "False"}, track_running_stats=${this.trackRunningStats ? "True" : "False"}`;
  }
}

/** BatchNorm over (N, C, H, W): statistics per channel over N, H and W. */
export class BatchNorm2d extends BatchNormBase {
  protected checkInput(input: Tensor): void {
    if (input.ndim !== 4) throw new RangeError(`BatchNorm2d: expected 4D input (got ${input.ndim}D input)`);
  }
}

/** BatchNorm over (N, C) or (N, C, L): statistics per feature over N (and L). */
export class BatchNorm1d extends BatchNormBase {
  protected checkInput(input: Tensor): void {
    if (input.ndim !== 2 && input.ndim !== 3)
      throw new RangeError(`BatchNorm1d: expected 2D or 3D input (got ${input.ndim}D input)`);
  }
}
