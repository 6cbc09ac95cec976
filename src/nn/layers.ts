// Layers: PyTorch's torch.nn layers with the same parameter names, shapes and default init.
import { Tensor } from "../torch/tensor";
import { empty } from "../torch/creation";
import type { DType } from "../torch/dtype";
import type { Generator } from "../torch/random";
import * as F from "../torch/functional";
import { Module } from "./module";
import * as init from "./init";
import { stashed } from "./stash";

export type IntPair = number | [number, number];

const pair = (v: IntPair): [number, number] => (typeof v === "number" ? [v, v] : [v[0], v[1]]);

export function checkPositiveInt(what: string, v: number): void {
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
