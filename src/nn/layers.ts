// Layers: PyTorch's torch.nn layers with the same parameter names, shapes and default init.
import { Tensor } from "../torch/tensor";
import { empty, ones, zeros } from "../torch/creation";
import { noGrad } from "../torch/autograd";
import type { DType } from "../torch/dtype";
import type { Generator } from "../torch/random";
import * as F from "../torch/functional";
import { Module } from "./module";
import * as init from "./init";

export type IntPair = number | [number, number];

const pair = (v: IntPair): [number, number] => (typeof v === "number" ? [v, v] : [v[0], v[1]]);

function checkPositiveInt(what: string, v: number): void {
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${what} must be a positive integer, got ${v}`);
}

function checkPair(what: string, v: IntPair, min: number): [number, number] {
  const p = pair(v);
  if (!Array.isArray(v) && typeof v !== "number")
    throw new TypeError(`${what} must be a number or [h, w], got ${String(v)}`);
  if (p.some((x) => !Number.isInteger(x) || x < min)) {
    throw new RangeError(`${what} must be integers >= ${min}, got ${JSON.stringify(v)}`);
  }
  return p;
}

/** Options shared by layers that own parameters. */
export interface ParameterOptions {
  /** Element type of the parameters (default float32). */
  dtype?: DType;
  /** Generator for the default init (default: libtorch's default generator). */
  generator?: Generator;
}

// ---- feedback alignment ----

/** A feedback matrix for `weight`: its shape and dtype, drawn as the weight's default init. */
function feedbackMatrix(weight: Tensor, generator?: Generator): Tensor {
  const b = empty(weight.shape, { dtype: weight.dtype });
  init.kaimingUniform_(b, { a: Math.sqrt(5), generator });
  return b;
}

/**
 * Switches every Conv2d and Linear inside `module` (itself included) to feedback alignment
 * (Lillicrap et al. 2016), each with its own fixed random feedback matrix drawn from `generator`
 * in module order. Other layers (batch norm, pooling) keep their exact gradients. Returns how many
 * layers were switched.
 */
export function useFeedbackAlignment(module: Module, options: { generator?: Generator } = {}): number {
  let count = 0;
  for (const m of module.modules()) {
    if (m instanceof Conv2d || m instanceof Linear) {
      m.useFeedbackAlignment(options.generator);
      count++;
    }
  }
  return count;
}

// ---- convolution ----

export interface Conv2dOptions extends ParameterOptions {
  stride?: IntPair;
  /** Zero padding per side, or "valid" (none) / "same" (output size = input size; stride 1 only). */
  padding?: IntPair | "valid" | "same";
  dilation?: IntPair;
  groups?: number;
  /** Learnable bias (default true). */
  bias?: boolean;
}

/** 2-D convolution over NCHW (or channels-last) input. Parameters: weight [out, in/groups, kh, kw], bias [out]. */
export class Conv2d extends Module {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number] | "valid" | "same";
  readonly dilation: [number, number];
  readonly groups: number;

  constructor(inChannels: number, outChannels: number, kernelSize: IntPair, options: Conv2dOptions = {}) {
    super();
    checkPositiveInt("Conv2d: inChannels", inChannels);
    checkPositiveInt("Conv2d: outChannels", outChannels);
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    this.kernelSize = checkPair("Conv2d: kernelSize", kernelSize, 1);
    this.stride = checkPair("Conv2d: stride", options.stride ?? 1, 1);
    const padding = options.padding ?? 0;
    if (padding === "same" || padding === "valid") {
      if (padding === "same" && (this.stride[0] !== 1 || this.stride[1] !== 1)) {
        throw new RangeError("Conv2d: padding 'same' is not supported for strided convolutions");
      }
      this.padding = padding;
    } else {
      this.padding = checkPair("Conv2d: padding", padding, 0);
    }
    this.dilation = checkPair("Conv2d: dilation", options.dilation ?? 1, 1);
    this.groups = options.groups ?? 1;
    checkPositiveInt("Conv2d: groups", this.groups);
    if (inChannels % this.groups !== 0)
      throw new RangeError(`Conv2d: inChannels (${inChannels}) must be divisible by groups (${this.groups})`);
    if (outChannels % this.groups !== 0)
      throw new RangeError(`Conv2d: outChannels (${outChannels}) must be divisible by groups (${this.groups})`);
    const dtype = options.dtype ?? "float32";
    this.registerParameter("weight", empty([outChannels, inChannels / this.groups, ...this.kernelSize], { dtype }));
    this.registerParameter("bias", options.bias === false ? null : empty([outChannels], { dtype }));
    this.resetParameters(options.generator);
  }

  get weight(): Tensor {
    return this.param("weight");
  }
  get bias(): Tensor | null {
    return this.optionalParam("bias");
  }

  /** PyTorch's default init: weight and bias U(-1/√fan_in, 1/√fan_in) (kaiming_uniform_, a=√5). */
  resetParameters(generator?: Generator): void {
    init.defaultLayerInit_(this.weight, this.bias, generator);
  }

  /** Feedback alignment's fixed random matrix (buffer `feedback_weight`), or null: exact backprop. */
  get feedbackWeight(): Tensor | null {
    return this.buffer("feedback_weight");
  }

  /**
   * Switches this layer to feedback alignment: the input gradient goes through a fixed random
   * matrix B of the weight's shape (drawn like the weight's default init, saved as the buffer
   * `feedback_weight`) instead of the weight. Forward and the weight and bias gradients are
   * unchanged. Calling it again keeps the existing B.
   */
  useFeedbackAlignment(generator?: Generator): void {
    if (this.feedbackWeight === null) this.registerBuffer("feedback_weight", feedbackMatrix(this.weight, generator));
  }

  /** Numeric padding for feedback alignment's convolution (which takes no "same"/"valid"). */
  #numericPadding(): [number, number] {
    if (this.padding === "valid") return [0, 0];
    if (this.padding !== "same") return this.padding;
    const total = this.kernelSize.map((k, i) => this.dilation[i] * (k - 1));
    if (total.some((t) => t % 2 !== 0)) {
      throw new RangeError("Conv2d: padding 'same' with an even kernel is not supported with feedback alignment");
    }
    return [total[0] / 2, total[1] / 2];
  }

  override forward(input: Tensor): Tensor {
    if (input.ndim !== 4 && input.ndim !== 3) {
      throw new RangeError(`Conv2d: expected a 3-D or 4-D input (N, C, H, W), got shape [${input.shape.join(", ")}]`);
    }
    const c = input.shape[input.ndim - 3];
    if (c !== this.inChannels) {
      throw new RangeError(
        `Conv2d: expected input with ${this.inChannels} channels, got shape [${input.shape.join(", ")}]`,
      );
    }
    const feedback = this.feedbackWeight;
    if (feedback !== null) {
      return F.feedbackConv2d(input, stashed(this.weight), stashed(this.bias), feedback, {
        stride: this.stride,
        padding: this.#numericPadding(),
        dilation: this.dilation,
        groups: this.groups,
      });
    }
    return F.conv2d(input, stashed(this.weight), stashed(this.bias), {
      stride: this.stride,
      padding: this.padding,
      dilation: this.dilation,
      groups: this.groups,
    });
  }

  override extraRepr(): string {
    const p = typeof this.padding === "string" ? `'${this.padding}'` : `(${this.padding.join(", ")})`;
    let s = `${this.inChannels}, ${this.outChannels}, kernel_size=(${this.kernelSize.join(", ")}), stride=(${this.stride.join(", ")}), padding=${p}`;
    if (this.dilation.some((d) => d !== 1)) s += `, dilation=(${this.dilation.join(", ")})`;
    if (this.groups !== 1) s += `, groups=${this.groups}`;
    if (this.bias === null) s += ", bias=False";
    return s;
  }
}

// ---- linear ----

export interface LinearOptions extends ParameterOptions {
  /** Learnable bias (default true). */
  bias?: boolean;
}

/** y = x Wᵀ + b. Parameters: weight [out, in], bias [out]. */
export class Linear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;

  constructor(inFeatures: number, outFeatures: number, options: LinearOptions = {}) {
    super();
    checkPositiveInt("Linear: inFeatures", inFeatures);
    checkPositiveInt("Linear: outFeatures", outFeatures);
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    const dtype = options.dtype ?? "float32";
    this.registerParameter("weight", empty([outFeatures, inFeatures], { dtype }));
    this.registerParameter("bias", options.bias === false ? null : empty([outFeatures], { dtype }));
    this.resetParameters(options.generator);
  }

  get weight(): Tensor {
    return this.param("weight");
  }
  get bias(): Tensor | null {
    return this.optionalParam("bias");
  }

  /** PyTorch's default init: weight and bias U(-1/√in, 1/√in) (kaiming_uniform_, a=√5). */
  resetParameters(generator?: Generator): void {
    init.defaultLayerInit_(this.weight, this.bias, generator);
  }

  /** Feedback alignment's fixed random matrix (buffer `feedback_weight`), or null: exact backprop. */
  get feedbackWeight(): Tensor | null {
    return this.buffer("feedback_weight");
  }

  /** Switches this layer to feedback alignment (see Conv2d.useFeedbackAlignment). */
  useFeedbackAlignment(generator?: Generator): void {
    if (this.feedbackWeight === null) this.registerBuffer("feedback_weight", feedbackMatrix(this.weight, generator));
  }

  override forward(input: Tensor): Tensor {
    const s = input.shape;
    if (s.length === 0 || s[s.length - 1] !== this.inFeatures) {
      throw new RangeError(
        `Linear: expected input with last dimension ${this.inFeatures}, got shape [${s.join(", ")}]`,
      );
    }
    const feedback = this.feedbackWeight;
    if (feedback !== null) return F.feedbackLinear(input, stashed(this.weight), stashed(this.bias), feedback);
    return F.linear(input, stashed(this.weight), stashed(this.bias));
  }

  override extraRepr(): string {
    return `in_features=${this.inFeatures}, out_features=${this.outFeatures}, bias=${this.bias === null ? "False" : "True"}`;
  }
}

// ---- batch normalisation ----

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

/** Nesting depth of withStashedWeights calls (0: layers use their parameters directly). */
let weightsStashed = 0;

/**
 * Runs `fn` with every convolution, linear and batch-norm layer using a copy of its parameters
 * (a differentiable clone), so that the graph recorded in `fn` saves the weights as they are now:
 * an optimizer step that updates the parameters in place afterwards leaves that graph valid, and a
 * later backward pass through it computes the gradient at these weights (which still accumulates
 * into the parameters' `.grad`). For keeping a graph across an update (stage parallelism's
 * pipelined schedule, docs/distributed.md); costs one copy of the parameters per forward.
 */
export function withStashedWeights<T>(fn: () => T): T {
  weightsStashed++;
  try {
    return fn();
  } finally {
    weightsStashed--;
  }
}

/** `p` itself, or inside withStashedWeights a differentiable copy of it. */
function stashed<T extends Tensor | null>(p: T): T {
  return weightsStashed > 0 && p !== null && p.requiresGrad ? (p.clone() as T) : p;
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

// ---- activations, pooling, shape ----

/** max(x, 0). With `inplace`, overwrites its input and returns it (saves one activation). */
export class ReLU extends Module {
  constructor(readonly inplace = false) {
    super();
  }
  override forward(input: Tensor): Tensor {
    return this.inplace ? input.relu_() : F.relu(input);
  }
  override extraRepr(): string {
    return this.inplace ? "inplace=True" : "";
  }
}

export interface MaxPool2dOptions {
  /** Default: kernelSize. */
  stride?: IntPair;
  padding?: IntPair;
  dilation?: IntPair;
  ceilMode?: boolean;
}

export class MaxPool2d extends Module {
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly ceilMode: boolean;

  constructor(kernelSize: IntPair, options: MaxPool2dOptions = {}) {
    super();
    this.kernelSize = checkPair("MaxPool2d: kernelSize", kernelSize, 1);
    this.stride = checkPair("MaxPool2d: stride", options.stride ?? kernelSize, 1);
    this.padding = checkPair("MaxPool2d: padding", options.padding ?? 0, 0);
    this.dilation = checkPair("MaxPool2d: dilation", options.dilation ?? 1, 1);
    this.ceilMode = options.ceilMode ?? false;
    if (this.padding[0] * 2 > this.kernelSize[0] || this.padding[1] * 2 > this.kernelSize[1]) {
      throw new RangeError("MaxPool2d: padding should be at most half of the kernel size");
    }
  }
  override forward(input: Tensor): Tensor {
    return F.maxPool2d(input, this.kernelSize, {
      stride: this.stride,
      padding: this.padding,
      dilation: this.dilation,
      ceilMode: this.ceilMode,
    });
  }
  override extraRepr(): string {
    return `kernel_size=(${this.kernelSize.join(", ")}), stride=(${this.stride.join(", ")}), padding=(${this.padding.join(", ")})`;
  }
}

export interface AvgPool2dOptions {
  /** Default: kernelSize. */
  stride?: IntPair;
  padding?: IntPair;
  ceilMode?: boolean;
  /** Count the zero padding in the average (default true). */
  countIncludePad?: boolean;
}

export class AvgPool2d extends Module {
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly ceilMode: boolean;
  readonly countIncludePad: boolean;

  constructor(kernelSize: IntPair, options: AvgPool2dOptions = {}) {
    super();
    this.kernelSize = checkPair("AvgPool2d: kernelSize", kernelSize, 1);
    this.stride = checkPair("AvgPool2d: stride", options.stride ?? kernelSize, 1);
    this.padding = checkPair("AvgPool2d: padding", options.padding ?? 0, 0);
    this.ceilMode = options.ceilMode ?? false;
    this.countIncludePad = options.countIncludePad ?? true;
  }
  override forward(input: Tensor): Tensor {
    return F.avgPool2d(input, this.kernelSize, {
      stride: this.stride,
      padding: this.padding,
      ceilMode: this.ceilMode,
      countIncludePad: this.countIncludePad,
    });
  }
  override extraRepr(): string {
    return `kernel_size=(${this.kernelSize.join(", ")}), stride=(${this.stride.join(", ")}), padding=(${this.padding.join(", ")})`;
  }
}

/** Average pooling to a fixed output size (1: global average pooling, output N × C × 1 × 1). */
export class AdaptiveAvgPool2d extends Module {
  readonly outputSize: [number, number];
  constructor(outputSize: IntPair) {
    super();
    this.outputSize = checkPair("AdaptiveAvgPool2d: outputSize", outputSize, 1);
  }
  override forward(input: Tensor): Tensor {
    return F.adaptiveAvgPool2d(input, this.outputSize);
  }
  override extraRepr(): string {
    return `output_size=(${this.outputSize.join(", ")})`;
  }
}

/** Flattens dims startDim…endDim into one (default: all but the batch dim). */
export class Flatten extends Module {
  constructor(
    readonly startDim = 1,
    readonly endDim = -1,
  ) {
    super();
  }
  override forward(input: Tensor): Tensor {
    return input.flatten(this.startDim, this.endDim);
  }
  override extraRepr(): string {
    return `start_dim=${this.startDim}, end_dim=${this.endDim}`;
  }
}

/** Returns its input unchanged (the same tensor object). */
export class Identity extends Module {
  override forward(input: Tensor): Tensor {
    return input;
  }
}

/** Zeroes elements with probability p and scales the rest by 1/(1−p) in training mode; identity in eval. */
export class Dropout extends Module {
  constructor(readonly p = 0.5) {
    super();
    if (!(p >= 0 && p <= 1)) throw new RangeError(`Dropout: p must be in [0, 1], got ${p}`);
  }
  override forward(input: Tensor): Tensor {
    return F.dropout(input, this.p, this.training);
  }
  override extraRepr(): string {
    return `p=${this.p}`;
  }
}
