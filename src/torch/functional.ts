// Functional neural-network ops, PyTorch's torch.nn.functional in camelCase.
import { type DType, scalarTypeCode } from "./dtype";
import { native } from "./native";
import { Tensor, callTensor, callTensors } from "./tensor";

type IntPair = number | [number, number];

export interface Conv2dOptions {
  stride?: IntPair;
  /** Zero padding per side, or "same" (output as large as the input; stride 1) or "valid" (none). */
  padding?: IntPair | "same" | "valid";
  dilation?: IntPair;
  groups?: number;
}

export function conv2d(input: Tensor, weight: Tensor, bias?: Tensor | null, options: Conv2dOptions = {}): Tensor {
  return callTensor(
    typeof options.padding === "string" ? "conv2d.padding" : "conv2d",
    input.handle,
    weight.handle,
    bias ? bias.handle : null,
    options.stride ?? 1,
    options.padding ?? 0,
    options.dilation ?? 1,
    options.groups ?? 1,
  );
}

const intPair = (v: IntPair | undefined, fallback: number): number[] =>
  v === undefined ? [fallback, fallback] : typeof v === "number" ? [v, v] : [v[0], v[1]];

/**
 * Feedback alignment (Lillicrap et al. 2016): the same output as conv2d, but the backward pass
 * sends the output gradient to the input through the fixed `feedback` tensor (the weight's shape)
 * instead of the weight: grad_input = conv_transpose2d(grad_output, feedback). The weight and
 * bias gradients are exact; `feedback` gets none. Padding is numeric (resolve "same" first).
 */
export function feedbackConv2d(
  input: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  feedback: Tensor,
  options: Omit<Conv2dOptions, "padding"> & { padding?: IntPair } = {},
): Tensor {
  return new Tensor(
    native.feedbackConv2d(
      input.handle,
      weight.handle,
      bias ? bias.handle : null,
      feedback.handle,
      intPair(options.stride, 1),
      intPair(options.padding, 0),
      intPair(options.dilation, 1),
      options.groups ?? 1,
    ),
  );
}

/**
 * Feedback alignment for a linear layer: y = x Wᵀ + b forward, grad_input = grad_output · B
 * backward (B = `feedback`, the weight's shape); the weight and bias gradients are exact.
 */
export function feedbackLinear(input: Tensor, weight: Tensor, bias: Tensor | null, feedback: Tensor): Tensor {
  return new Tensor(native.feedbackLinear(input.handle, weight.handle, bias ? bias.handle : null, feedback.handle));
}

export interface BatchNormOptions {
  weight?: Tensor | null;
  bias?: Tensor | null;
  /** Normalise with batch statistics and update the running ones (true), or use the running ones. */
  training?: boolean;
  momentum?: number;
  eps?: number;
}

/** Batch normalisation; in training mode the running statistics are updated in place. */
export function batchNorm(
  input: Tensor,
  runningMean: Tensor | null,
  runningVar: Tensor | null,
  options: BatchNormOptions = {},
): Tensor {
  return callTensor("batch_norm", input.handle, ...batchNormArgs(runningMean, runningVar, options), true);
}

/** batch_norm's arguments after the input, in its schema's order, defaults filled in. */
function batchNormArgs(runningMean: Tensor | null, runningVar: Tensor | null, options: BatchNormOptions) {
  return [
    options.weight?.handle ?? null,
    options.bias?.handle ?? null,
    runningMean?.handle ?? null,
    runningVar?.handle ?? null,
    options.training ?? false,
    options.momentum ?? 0.1,
    options.eps ?? 1e-5,
  ] as const;
}

export interface BatchNormReLUOptions extends BatchNormOptions {
  /** Added to the normalised input before the ReLU (a residual block's identity branch). */
  residual?: Tensor | null;
}

/**
 * relu(batchNorm(input, …) + residual), the same values as the separate operators. In training
 * mode, for a float32 CPU input stored contiguous or channels-last (and a residual of its shape and
 * layout), they run as one autograd node with kernels of their own that read and write the data
 * fewer times (docs/engine.md, "Batch norm and ReLU in one node"); it cannot be differentiated
 * twice. Otherwise, or when switched off (setFusedBatchNormReLU), batch_norm, add_ and relu_ run.
 */
export function batchNormReLU(
  input: Tensor,
  runningMean: Tensor | null,
  runningVar: Tensor | null,
  options: BatchNormReLUOptions = {},
): Tensor {
  const residual = options.residual?.handle ?? null;
  return new Tensor(native.batchNormReLU(input.handle, residual, ...batchNormArgs(runningMean, runningVar, options)));
}

/**
 * Whether batchNormReLU may run as one node (default: yes, unless `LOCO_FUSED_BN_RELU=0` was set
 * when loco loaded). Off, it runs ATen's batch_norm, add_ and relu_, whose rounding PyTorch's
 * results share bit for bit.
 */
export function setFusedBatchNormReLU(enabled: boolean): void {
  native.setFusedBatchNormReLU(enabled);
}

export function fusedBatchNormReLUEnabled(): boolean {
  return native.fusedBatchNormReLUEnabled();
}

export function linear(input: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  return callTensor("linear", input.handle, weight.handle, bias ? bias.handle : null);
}

export function relu(input: Tensor): Tensor {
  return callTensor("relu", input.handle);
}

export function relu_(input: Tensor): Tensor {
  return input.relu_();
}

export function gelu(input: Tensor): Tensor {
  return callTensor("gelu", input.handle, "none");
}

export function leakyRelu(input: Tensor, negativeSlope = 0.01): Tensor {
  return callTensor("leaky_relu", input.handle, negativeSlope);
}

export interface Pool2dOptions {
  stride?: IntPair;
  padding?: IntPair;
  ceilMode?: boolean;
}

export function maxPool2d(
  input: Tensor,
  kernelSize: IntPair,
  options: Pool2dOptions & { dilation?: IntPair } = {},
): Tensor {
  return callTensor(
    "max_pool2d",
    input.handle,
    kernelSize,
    options.stride ?? kernelSize,
    options.padding ?? 0,
    options.dilation ?? 1,
    options.ceilMode ?? false,
  );
}

export function avgPool2d(
  input: Tensor,
  kernelSize: IntPair,
  options: Pool2dOptions & { countIncludePad?: boolean } = {},
): Tensor {
  return callTensor(
    "avg_pool2d",
    input.handle,
    kernelSize,
    options.stride ?? kernelSize,
    options.padding ?? 0,
    options.ceilMode ?? false,
    options.countIncludePad ?? true,
    null,
  );
}

export function adaptiveAvgPool2d(input: Tensor, outputSize: IntPair): Tensor {
  return callTensor("adaptive_avg_pool2d", input.handle, outputSize);
}

export function adaptiveMaxPool2d(input: Tensor, outputSize: IntPair): Tensor {
  return callTensors("adaptive_max_pool2d", input.handle, outputSize)[0];
}

/** Zeroes elements with probability p and scales the rest by 1/(1-p) when training. */
export function dropout(input: Tensor, p = 0.5, training = true): Tensor {
  if (p < 0 || p > 1) throw new RangeError(`dropout: p must be in [0, 1], got ${p}`);
  return callTensor("dropout", input.handle, p, training);
}

/** Divides by the p-norm along `dim` (clamped below by eps), like F.normalize. */
export function normalize(input: Tensor, options: { p?: number; dim?: number; eps?: number } = {}): Tensor {
  const norm = callTensor("norm.ScalarOpt_dim", input.handle, options.p ?? 2, [options.dim ?? 1], true);
  const clamped = callTensor("clamp_min", norm.handle, options.eps ?? 1e-12);
  norm.dispose();
  const out = callTensor("div.Tensor", input.handle, clamped.handle);
  clamped.dispose();
  return out;
}

export function softmax(input: Tensor, dim: number): Tensor {
  return callTensor("softmax.int", input.handle, dim);
}

export function logSoftmax(input: Tensor, dim: number, dtype?: DType): Tensor {
  return callTensor("log_softmax.int", input.handle, dim, dtype ? scalarTypeCode[dtype] : null);
}

export type Reduction = "none" | "mean" | "sum";
const reductionCode: Record<Reduction, number> = { none: 0, mean: 1, sum: 2 };

export interface CrossEntropyOptions {
  weight?: Tensor | null;
  reduction?: Reduction;
  ignoreIndex?: number;
  labelSmoothing?: number;
}

/** Cross-entropy of logits against class indices (int64) or class probabilities. */
export function crossEntropy(logits: Tensor, target: Tensor, options: CrossEntropyOptions = {}): Tensor {
  return callTensor(
    "cross_entropy_loss",
    logits.handle,
    target.handle,
    options.weight ? options.weight.handle : null,
    reductionCode[options.reduction ?? "mean"],
    options.ignoreIndex ?? -100,
    options.labelSmoothing ?? 0,
  );
}

export function nllLoss(
  logProbs: Tensor,
  target: Tensor,
  options: Omit<CrossEntropyOptions, "labelSmoothing"> = {},
): Tensor {
  return callTensor(
    "nll_loss_nd",
    logProbs.handle,
    target.handle,
    options.weight ? options.weight.handle : null,
    reductionCode[options.reduction ?? "mean"],
    options.ignoreIndex ?? -100,
  );
}

export function mseLoss(input: Tensor, target: Tensor, reduction: Reduction = "mean"): Tensor {
  return callTensor("mse_loss", input.handle, target.handle, reductionCode[reduction]);
}

/** One-hot encoding of int64 class indices (int64 result, like PyTorch). */
export function oneHot(indices: Tensor, numClasses = -1): Tensor {
  return callTensor("one_hot", indices.handle, numClasses);
}

export interface InterpolateOptions {
  size?: IntPair;
  scaleFactor?: number | [number, number];
  mode?: "nearest" | "bilinear" | "bicubic";
  alignCorners?: boolean;
}

/** Resizes NCHW images (nearest, bilinear or bicubic), like F.interpolate. */
export function interpolate(input: Tensor, options: InterpolateOptions): Tensor {
  const mode = options.mode ?? "nearest";
  if ((options.size === undefined) === (options.scaleFactor === undefined)) {
    throw new TypeError("interpolate: give exactly one of size and scaleFactor");
  }
  const size =
    options.size === undefined ? null : typeof options.size === "number" ? [options.size, options.size] : options.size;
  const scales =
    options.scaleFactor === undefined
      ? null
      : typeof options.scaleFactor === "number"
        ? [options.scaleFactor, options.scaleFactor]
        : options.scaleFactor;
  if (mode === "nearest") {
    if (options.alignCorners !== undefined)
      throw new TypeError("interpolate: alignCorners applies to bilinear and bicubic only");
    return callTensor("upsample_nearest2d.vec", input.handle, size, scales);
  }
  const op = mode === "bilinear" ? "upsample_bilinear2d.vec" : "upsample_bicubic2d.vec";
  return callTensor(op, input.handle, size, options.alignCorners ?? false, scales);
}

/**
 * Pads the last dimensions: `pads` lists (left, right) pairs from the last dimension backwards,
 * as F.pad does. Modes: constant (with value), reflect, replicate, circular.
 */
export function pad(
  input: Tensor,
  pads: number[],
  mode: "constant" | "reflect" | "replicate" | "circular" = "constant",
  value = 0,
): Tensor {
  if (mode === "constant") return callTensor("constant_pad_nd", input.handle, pads, value);
  return callTensor("pad", input.handle, pads, mode, null);
}

/** Cosine similarity along `dim`. */
export function cosineSimilarity(a: Tensor, b: Tensor, dim = 1, eps = 1e-8): Tensor {
  return callTensor("cosine_similarity", a.handle, b.handle, dim, eps);
}

export interface GridSampleOptions {
  /** Interpolation (default "bilinear"). */
  mode?: "bilinear" | "nearest" | "bicubic";
  /** Values read outside the input (default "zeros"). */
  paddingMode?: "zeros" | "border" | "reflection";
  /** Whether -1 and 1 are the centres of the corner pixels (true) or their outer edges (default false). */
  alignCorners?: boolean;
}

const gridModeCode = { bilinear: 0, nearest: 1, bicubic: 2 } as const;
const gridPaddingCode = { zeros: 0, border: 1, reflection: 2 } as const;

/**
 * Samples `input` (N, C, H, W) at the normalised (x, y) locations of `grid` (N, Ho, Wo, 2), in
 * [-1, 1], like F.grid_sample: the result is N × C × Ho × Wo. Differentiable in input and grid.
 */
export function gridSample(input: Tensor, grid: Tensor, options: GridSampleOptions = {}): Tensor {
  const mode = options.mode ?? "bilinear";
  const paddingMode = options.paddingMode ?? "zeros";
  if (!(mode in gridModeCode))
    throw new TypeError(`gridSample: unknown mode '${String(mode)}' (bilinear, nearest, bicubic)`);
  if (!(paddingMode in gridPaddingCode)) {
    throw new TypeError(`gridSample: unknown paddingMode '${String(paddingMode)}' (zeros, border, reflection)`);
  }
  return callTensor(
    "grid_sampler",
    input.handle,
    grid.handle,
    gridModeCode[mode],
    gridPaddingCode[paddingMode],
    options.alignCorners ?? false,
  );
}
