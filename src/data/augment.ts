// Batched, seeded image augmentations on NCHW float tensors in [0, 1]: random resized crop with
// horizontal flip, colour jitter, random grayscale, Gaussian blur and normalisation, with the
// parameters of SimCLR's published pipelines as presets.
//
// Every random choice is drawn per image, in JS, from an Rng (./rng.ts), in the order torchvision
// draws them (crop box, flip, jitter on/off, jitter order and factors, grayscale, blur on/off,
// sigma). sample() returns those choices as plain objects (tests read crop areas, flip rates and
// factors from them), and apply() executes them on the whole batch with libtorch ops:
//
// - crop + resize + flip: one grid_sampler_2d call for the batch. The sampling grid of image b
//   holds, for output column u, the source column left + (u + 0.5) · w / S − 0.5 clamped to the
//   crop box [left, left + w − 1] (reversed when flipped), and likewise for rows: exactly what
//   cropping and then resizing bilinearly (align_corners = false, no antialiasing) computes, as
//   torchvision's resized_crop on tensors with antialias = False. Upscaling (every crop of a
//   CIFAR or STL-10 image at its native size) is therefore identical to torchvision; a crop larger
//   than the output is not low-pass filtered first (torchvision/PIL antialias).
// - colour jitter: torchvision's ColorJitter (brightness: scale; contrast: blend with the mean of
//   the grayscale image; saturation: blend with the grayscale image; hue: shift in HSV space), in a
//   random order per image, each step clamped to [0, 1]; the images sharing an op at a step are
//   gathered and processed together.
// - grayscale: ITU-R 601 luma (0.2989 R + 0.587 G + 0.114 B), repeated on the three channels.
// - Gaussian blur: a per-image separable kernel exp(−x²/2σ²) over kernelSize taps, reflect padding.
// - normalise: (x − mean) / std per channel.
import { type Tensor, fromTypedArray, scope, where, stack, F } from "../torch";
import { Rng, roundHalfEven } from "./rng";

export interface CropConfig {
  /** Range of the crop's area as a fraction of the image's (torchvision's default: [0.08, 1]). */
  scale: [number, number];
  /** Range of the crop's aspect ratio w / h, sampled log-uniformly (default [3/4, 4/3]). */
  ratio?: [number, number];
}

export interface ColorJitterConfig {
  /** Brightness factor uniform in [max(0, 1 − b), 1 + b]; 0 disables. */
  brightness: number;
  /** Contrast factor uniform in [max(0, 1 − c), 1 + c]; 0 disables. */
  contrast: number;
  /** Saturation factor uniform in [max(0, 1 − s), 1 + s]; 0 disables (no effect on 1 channel). */
  saturation: number;
  /** Hue shift uniform in [−h, h] (h ≤ 0.5, in turns of the colour wheel); 0 disables. */
  hue: number;
  /** Probability that an image is jittered at all. */
  p: number;
}

export interface BlurConfig {
  /** Probability that an image is blurred. */
  p: number;
  /** Sigma uniform in this range (SimCLR: [0.1, 2.0]). */
  sigma: [number, number];
  /** Odd kernel size (default: 10% of the output size, made odd, at least 3). */
  kernelSize?: number;
}

export interface NormalizeConfig {
  mean: number[];
  std: number[];
}

export interface AugmentConfig {
  /** Output size: side length or [height, width]. */
  size: number | [number, number];
  /** Random resized crop; null / absent: the whole image is resized to `size`. */
  crop?: CropConfig | null;
  /** Probability of a horizontal flip (default 0). */
  hflip?: number;
  colorJitter?: ColorJitterConfig | null;
  /** Probability of converting to grayscale (default 0). */
  grayscale?: number;
  blur?: BlurConfig | null;
  /** Per-channel normalisation applied last; null / absent leaves values in [0, 1]. */
  normalize?: NormalizeConfig | null;
}

/** The random choices made for one image. */
export interface SampleParams {
  /** Crop box in source pixels. */
  crop: { top: number; left: number; height: number; width: number };
  flip: boolean;
  /** Null when the image is not jittered. `order` lists ops: 0 brightness, 1 contrast, 2 saturation, 3 hue. */
  jitter: { order: number[]; brightness: number; contrast: number; saturation: number; hue: number } | null;
  grayscale: boolean;
  /** Sigma of the blur, or null when not blurred. */
  blurSigma: number | null;
}

// ---- presets -------------------------------------------------------------------------------------

/** Per-channel statistics of common datasets (for NormalizeConfig). */
export const CIFAR10_NORMALIZE: NormalizeConfig = { mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616] };
export const IMAGENET_NORMALIZE: NormalizeConfig = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
export const FASHION_MNIST_NORMALIZE: NormalizeConfig = { mean: [0.286], std: [0.353] };
export const MNIST_NORMALIZE: NormalizeConfig = { mean: [0.1307], std: [0.3081] };

export interface PresetOptions {
  normalize?: NormalizeConfig | null;
}

/**
 * SimCLR's CIFAR-10 augmentation (Chen et al. 2020, arXiv:2002.05709, appendix B.9, and the
 * authors' repository google-research/simclr with color_jitter_strength 0.5): random resized crop
 * with area 0.08–1 and aspect 3/4–4/3, horizontal flip with p 0.5, colour jitter (0.4, 0.4, 0.4,
 * 0.1) = 0.5 × (0.8, 0.8, 0.8, 0.2) applied with p 0.8, grayscale with p 0.2, no blur. The
 * published pipeline does not normalise; pass `normalize` (e.g. CIFAR10_NORMALIZE) to do so.
 */
export function simclrCifar(size = 32, options: PresetOptions = {}): AugmentConfig {
  return {
    size,
    crop: { scale: [0.08, 1], ratio: [3 / 4, 4 / 3] },
    hflip: 0.5,
    colorJitter: { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8 },
    grayscale: 0.2,
    blur: null,
    normalize: options.normalize ?? null,
  };
}

/**
 * SimCLR's ImageNet augmentation (same sources, color_jitter_strength 1.0): random resized crop
 * 0.08–1, aspect 3/4–4/3, flip 0.5, colour jitter (0.8, 0.8, 0.8, 0.2) with p 0.8, grayscale 0.2,
 * Gaussian blur with p 0.5, sigma 0.1–2.0 and a kernel of 10% of the image side. Also the usual
 * choice for STL-10 at 96 × 96.
 */
export function simclrImagenet(size = 224, options: PresetOptions = {}): AugmentConfig {
  return {
    size,
    crop: { scale: [0.08, 1], ratio: [3 / 4, 4 / 3] },
    hflip: 0.5,
    colorJitter: { brightness: 0.8, contrast: 0.8, saturation: 0.8, hue: 0.2, p: 0.8 },
    grayscale: 0.2,
    blur: { p: 0.5, sigma: [0.1, 2.0] },
    normalize: options.normalize ?? null,
  };
}

/**
 * loco's preset for one-channel images ((Fashion-)MNIST); no published SimCLR pipeline exists for
 * them. Random resized crop with area 0.2–1 (at 28 × 28, 0.08 leaves 8 × 8 crops that rarely show
 * an identifiable object), aspect 3/4–4/3; horizontal flip with p 0.5 (set `hflip: 0` for digits,
 * which are not mirror-symmetric); brightness and contrast jitter 0.4 with p 0.8 (saturation and
 * hue do nothing on one channel); no grayscale, no blur.
 */
export function grayscale(size = 28, options: PresetOptions & { hflip?: number } = {}): AugmentConfig {
  return {
    size,
    crop: { scale: [0.2, 1], ratio: [3 / 4, 4 / 3] },
    hflip: options.hflip ?? 0.5,
    colorJitter: { brightness: 0.4, contrast: 0.4, saturation: 0, hue: 0, p: 0.8 },
    grayscale: 0,
    blur: null,
    normalize: options.normalize ?? null,
  };
}

/** No randomness: resize to `size` (a no-op at the native size) and normalise. For evaluation. */
export function evalTransform(size: number | [number, number], options: PresetOptions = {}): AugmentConfig {
  return { size, normalize: options.normalize ?? null };
}

export const presets = { simclrCifar, simclrImagenet, grayscale, evalTransform };
export type PresetName = "simclrCifar" | "simclrImagenet" | "grayscale";

/** A preset by name (for configs and the command line). */
export function presetByName(name: PresetName, size?: number, options: PresetOptions = {}): AugmentConfig {
  switch (name) {
    case "simclrCifar":
      return simclrCifar(size, options);
    case "simclrImagenet":
      return simclrImagenet(size, options);
    case "grayscale":
      return grayscale(size, options);
    default:
      throw new RangeError(`augmentation preset must be simclrCifar, simclrImagenet or grayscale, got ${String(name)}`);
  }
}

// ---- validation -----------------------------------------------------------------------------------

function prob(v: unknown, field: string): number {
  if (v === undefined || v === null) return 0;
  if (typeof v !== "number" || !(v >= 0 && v <= 1))
    throw new RangeError(`augment: ${field} must be a probability in [0, 1], got ${String(v)}`);
  return v;
}

function range(v: unknown, field: string, lowest: number, highest = Infinity): [number, number] {
  if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => typeof x === "number" && Number.isFinite(x))) {
    throw new RangeError(`augment: ${field} must be [low, high], got ${JSON.stringify(v)}`);
  }
  const [a, b] = v as [number, number];
  if (!(a > lowest || (lowest === 0 && a >= 0)) || !(a <= b) || b > highest) {
    throw new RangeError(`augment: ${field} must satisfy ${lowest} < low <= high <= ${highest}, got [${a}, ${b}]`);
  }
  return [a, b];
}

function nonNegative(v: unknown, field: string, max = Infinity): number {
  if (typeof v !== "number" || !(v >= 0 && v <= max))
    throw new RangeError(`augment: ${field} must be a number in [0, ${max}], got ${String(v)}`);
  return v;
}

/** Checks a config; errors name the field, the value and what was expected. */
export function validateAugmentConfig(config: AugmentConfig): void {
  const [h, w] = typeof config.size === "number" ? [config.size, config.size] : (config.size ?? []);
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 1 || w < 1) {
    throw new RangeError(
      `augment: size must be a positive integer or [height, width], got ${JSON.stringify(config.size)}`,
    );
  }
  if (config.crop) {
    range(config.crop.scale, "crop.scale", 0, 1);
    if (config.crop.ratio !== undefined) range(config.crop.ratio, "crop.ratio", 0);
  }
  prob(config.hflip, "hflip");
  if (config.colorJitter) {
    const j = config.colorJitter;
    nonNegative(j.brightness, "colorJitter.brightness");
    nonNegative(j.contrast, "colorJitter.contrast");
    nonNegative(j.saturation, "colorJitter.saturation");
    nonNegative(j.hue, "colorJitter.hue", 0.5);
    prob(j.p, "colorJitter.p");
  }
  prob(config.grayscale, "grayscale");
  if (config.blur) {
    prob(config.blur.p, "blur.p");
    range(config.blur.sigma, "blur.sigma", 0);
    const k = config.blur.kernelSize;
    if (k !== undefined && !(Number.isInteger(k) && k >= 1 && k % 2 === 1)) {
      throw new RangeError(`augment: blur.kernelSize must be an odd positive integer, got ${String(k)}`);
    }
  }
  if (config.normalize) {
    const { mean, std } = config.normalize;
    if (!Array.isArray(mean) || !Array.isArray(std) || mean.length !== std.length || mean.length === 0) {
      throw new RangeError("augment: normalize needs mean and std arrays of the same, non-zero length");
    }
    if (std.some((s) => !(s > 0)))
      throw new RangeError(`augment: normalize.std must be positive, got [${std.join(", ")}]`);
  }
}

// ---- sampling --------------------------------------------------------------------------------------

/**
 * torchvision's RandomResizedCrop.get_params: up to 10 tries of an area fraction uniform in
 * `scale` and a log-uniform aspect ratio; then the largest centred crop within the ratio range.
 */
export function sampleCrop(
  rng: Rng,
  height: number,
  width: number,
  scale: [number, number],
  ratio: [number, number],
): SampleParams["crop"] {
  const area = height * width;
  const logLow = Math.log(ratio[0]);
  const logHigh = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logLow, logHigh));
    const w = roundHalfEven(Math.sqrt(targetArea * aspect));
    const h = roundHalfEven(Math.sqrt(targetArea / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = rng.randint(0, height - h + 1);
      const left = rng.randint(0, width - w + 1);
      return { top, left, height: h, width: w };
    }
  }
  const inRatio = width / height;
  let w: number;
  let h: number;
  if (inRatio < ratio[0]) {
    w = width;
    h = roundHalfEven(w / ratio[0]);
  } else if (inRatio > ratio[1]) {
    h = height;
    w = roundHalfEven(h * ratio[1]);
  } else {
    w = width;
    h = height;
  }
  return { top: Math.floor((height - h) / 2), left: Math.floor((width - w) / 2), height: h, width: w };
}

function factorRange(x: number): [number, number] | null {
  return x > 0 ? [Math.max(0, 1 - x), 1 + x] : null;
}

/** A compiled augmentation pipeline. */
export class Augmentation {
  readonly config: AugmentConfig;
  readonly outHeight: number;
  readonly outWidth: number;

  constructor(config: AugmentConfig) {
    validateAugmentConfig(config);
    this.config = config;
    [this.outHeight, this.outWidth] = typeof config.size === "number" ? [config.size, config.size] : config.size;
  }

  /** Kernel size of the blur: the configured one, else 10% of the output side made odd (≥ 3). */
  get blurKernelSize(): number {
    const k = this.config.blur?.kernelSize;
    if (k !== undefined) return k;
    const t = Math.floor(0.1 * Math.min(this.outHeight, this.outWidth));
    return Math.max(3, t % 2 === 0 ? t + 1 : t);
  }

  /** Draws the random choices for `n` images of height × width, in torchvision's order. */
  sample(rng: Rng, n: number, height: number, width: number): SampleParams[] {
    const c = this.config;
    const out: SampleParams[] = [];
    const bRange = c.colorJitter ? factorRange(c.colorJitter.brightness) : null;
    const cRange = c.colorJitter ? factorRange(c.colorJitter.contrast) : null;
    const sRange = c.colorJitter ? factorRange(c.colorJitter.saturation) : null;
    const hue = c.colorJitter?.hue ?? 0;
    for (let i = 0; i < n; i++) {
      const crop = c.crop
        ? sampleCrop(rng, height, width, c.crop.scale, c.crop.ratio ?? [3 / 4, 4 / 3])
        : { top: 0, left: 0, height, width };
      const flip = (c.hflip ?? 0) > 0 ? rng.bernoulli(c.hflip!) : false;
      let jitter: SampleParams["jitter"] = null;
      if (c.colorJitter && rng.bernoulli(c.colorJitter.p)) {
        const order = Array.from(rng.permutation(4));
        jitter = {
          order,
          brightness: bRange ? rng.uniform(bRange[0], bRange[1]) : 1,
          contrast: cRange ? rng.uniform(cRange[0], cRange[1]) : 1,
          saturation: sRange ? rng.uniform(sRange[0], sRange[1]) : 1,
          hue: hue > 0 ? rng.uniform(-hue, hue) : 0,
        };
      }
      const gray = (c.grayscale ?? 0) > 0 ? rng.bernoulli(c.grayscale!) : false;
      let blurSigma: number | null = null;
      if (c.blur && rng.bernoulli(c.blur.p)) blurSigma = rng.uniform(c.blur.sigma[0], c.blur.sigma[1]);
      out.push({ crop, flip, jitter, grayscale: gray, blurSigma });
    }
    return out;
  }

  /**
   * Samples choices and applies them: `images` is float NCHW in [0, 1] (or uint8, converted). The
   * first `skip` images' choices are drawn and dropped: a rank's shard of a global batch continues
   * the batch's stream where the ranks before it stop, so the shards together are augmented exactly
   * as the whole batch in one process.
   */
  run(images: Tensor, rng: Rng, skip = 0): { output: Tensor; params: SampleParams[] } {
    const [n, , h, w] = images.shape;
    const params = this.sample(rng, skip + n, h, w).slice(skip);
    return { output: this.apply(images, params), params };
  }

  /** Applies given choices to a batch; returns a new float32 NCHW tensor (the input is untouched). */
  apply(images: Tensor, params: SampleParams[]): Tensor {
    const shape = images.shape;
    if (shape.length !== 4) throw new RangeError(`augment: expected NCHW images, got shape [${shape.join(", ")}]`);
    const [n, channels] = shape;
    if (params.length !== n) throw new RangeError(`augment: ${params.length} parameter sets for ${n} images`);
    const norm = this.config.normalize;
    if (norm && norm.mean.length !== channels) {
      throw new RangeError(`augment: normalize has ${norm.mean.length} channels, the images have ${channels}`);
    }
    return scope(() => {
      let x = images.dtype === "uint8" ? images.float().div(255) : images.dtype === "float32" ? images : images.float();
      x = this.#geometry(x, params);
      x = this.#colorJitter(x, params);
      x = this.#grayscale(x, params);
      x = this.#blur(x, params);
      if (norm) {
        const mean = fromTypedArray(Float32Array.from(norm.mean), [1, channels, 1, 1]);
        const std = fromTypedArray(Float32Array.from(norm.std), [1, channels, 1, 1]);
        x = x.sub(mean).div(std);
      }
      return x === images ? images.clone() : x;
    });
  }

  #geometry(x: Tensor, params: SampleParams[]): Tensor {
    const [n, , h, w] = x.shape;
    const oh = this.outHeight;
    const ow = this.outWidth;
    const identity = (p: SampleParams): boolean =>
      p.crop.top === 0 && p.crop.left === 0 && p.crop.height === h && p.crop.width === w && oh === h && ow === w;
    if (params.every((p) => identity(p) && !p.flip)) return x;
    if (params.every(identity)) {
      const flipped = indicesWhere(params, (p) => p.flip);
      const idx = indexTensor(flipped);
      return indexCopy(x, idx, x.indexSelect(0, idx).flip([3]));
    }
    // The sampling grid, in grid_sampler's normalised coordinates (align_corners = false:
    // pixel k of a side of length L is at (2k + 1) / L − 1).
    const gx = new Float32Array(n * ow);
    const gy = new Float32Array(n * oh);
    for (let b = 0; b < n; b++) {
      const { top, left, height, width } = params[b].crop;
      for (let u = 0; u < ow; u++) {
        let sx = left + ((u + 0.5) * width) / ow - 0.5;
        sx = Math.min(Math.max(sx, left), left + width - 1);
        gx[b * ow + (params[b].flip ? ow - 1 - u : u)] = (2 * sx + 1) / w - 1;
      }
      for (let v = 0; v < oh; v++) {
        let sy = top + ((v + 0.5) * height) / oh - 0.5;
        sy = Math.min(Math.max(sy, top), top + height - 1);
        gy[b * oh + v] = (2 * sy + 1) / h - 1;
      }
    }
    const gridX = fromTypedArray(gx, [n, 1, ow]).expand(n, oh, ow);
    const gridY = fromTypedArray(gy, [n, oh, 1]).expand(n, oh, ow);
    const grid = stack([gridX, gridY], 3);
    // Border padding is never reached: the grid stays in the box.
    return F.gridSample(x, grid, { mode: "bilinear", paddingMode: "border", alignCorners: false });
  }

  #colorJitter(x: Tensor, params: SampleParams[]): Tensor {
    if (!this.config.colorJitter) return x;
    const [n, channels] = x.shape;
    for (let step = 0; step < 4; step++) {
      // Brightness, contrast and saturation are all blends clamp(f·x + (1 − f)·D) with D = 0, the
      // mean luma, or the luma image: one blend over the whole batch does the step's op for every
      // image, with f = 1 (exactly the identity) for images doing hue or nothing at this step.
      const f = new Float32Array(n).fill(1);
      const useMean = new Float32Array(n);
      const useLuma = new Float32Array(n);
      let blends = 0;
      const hue: number[] = [];
      params.forEach((p, b) => {
        const j = p.jitter;
        if (j === null) return;
        const op = j.order[step];
        if (op === 3) {
          if (channels === 3 && j.hue !== 0) hue.push(b);
          return;
        }
        if (op === 2 && channels === 1) return; // saturation leaves one channel unchanged
        const factor = jitterFactor(j, op);
        if (factor === 1) return;
        f[b] = factor;
        if (op === 1) useMean[b] = 1;
        if (op === 2) useLuma[b] = 1;
        blends++;
      });
      if (blends > 0) {
        const gray = channels === 3 ? luma(x) : x;
        const mean = gray.mean([1, 2, 3], true);
        // D = useMean·mean + useLuma·gray (0 for brightness and for untouched images).
        const target = gray
          .mul(fromTypedArray(useLuma, [n, 1, 1, 1]))
          .add_(mean.mul_(fromTypedArray(useMean, [n, 1, 1, 1])));
        x = blendInPlace(x.sub(target), fromTypedArray(f, [n, 1, 1, 1]), target);
      }
      if (hue.length > 0) {
        const idx = indexTensor(hue);
        const shifts = fromTypedArray(
          Float32Array.from(hue, (b) => params[b].jitter!.hue),
          [hue.length, 1, 1],
        );
        x = indexCopy(x, idx, adjustHue(x.indexSelect(0, idx), shifts));
      }
    }
    return x;
  }

  #grayscale(x: Tensor, params: SampleParams[]): Tensor {
    const channels = x.shape[1];
    if (channels === 1) return x;
    const members = indicesWhere(params, (p) => p.grayscale);
    if (members.length === 0) return x;
    const idx = indexTensor(members);
    const gray = luma(x.indexSelect(0, idx)).expand(members.length, channels, x.shape[2], x.shape[3]);
    return indexCopy(x, idx, gray.contiguous());
  }

  #blur(x: Tensor, params: SampleParams[]): Tensor {
    const members = indicesWhere(params, (p) => p.blurSigma !== null);
    if (members.length === 0) return x;
    const [, c, h, w] = x.shape;
    const k = this.blurKernelSize;
    const half = (k - 1) / 2;
    if (Math.floor(k / 2) >= Math.min(h, w)) {
      throw new RangeError(
        `augment: blur kernel ${k} is too large for ${h}x${w} images (reflect padding needs kernelSize / 2 < side)`,
      );
    }
    const m = members.length;
    const weights = new Float32Array(m * c * k);
    members.forEach((b, j) => {
      const sigma = params[b].blurSigma!;
      const kernel = new Float64Array(k);
      let sum = 0;
      for (let t = 0; t < k; t++) {
        const v = (-half + t) / sigma;
        kernel[t] = Math.exp(-0.5 * v * v);
        sum += kernel[t];
      }
      for (let ch = 0; ch < c; ch++) for (let t = 0; t < k; t++) weights[(j * c + ch) * k + t] = kernel[t] / sum;
    });
    const idx = indexTensor(members);
    const sub = x.indexSelect(0, idx).reshape(1, m * c, h, w);
    const p = Math.floor(k / 2);
    const padded = F.pad(sub, [p, p, p, p], "reflect");
    const vertical = F.conv2d(padded, fromTypedArray(weights, [m * c, 1, k, 1]), null, { groups: m * c });
    const both = F.conv2d(vertical, fromTypedArray(weights, [m * c, 1, 1, k]), null, { groups: m * c });
    return indexCopy(x, idx, both.reshape(m, c, h, w));
  }
}

// ---- colour helpers -----------------------------------------------------------------------------

function jitterFactor(j: NonNullable<SampleParams["jitter"]>, op: number): number {
  return op === 0 ? j.brightness : op === 1 ? j.contrast : op === 2 ? j.saturation : j.hue;
}

function indicesWhere(params: SampleParams[], pred: (p: SampleParams) => boolean): number[] {
  const out: number[] = [];
  params.forEach((p, i) => {
    if (pred(p)) out.push(i);
  });
  return out;
}

/** A copy of x with rows idx (dim 0) replaced by src. */
function indexCopy(x: Tensor, idx: Tensor, src: Tensor): Tensor {
  return x.indexCopy(0, idx, src);
}

function indexTensor(indices: number[]): Tensor {
  return fromTypedArray(BigInt64Array.from(indices, (i) => BigInt(i)));
}

/** ITU-R 601 luma of N × 3 × H × W images, N × 1 × H × W (torchvision's rgb_to_grayscale). */
export function luma(x: Tensor): Tensor {
  const [r, g, b] = [0, 1, 2].map((c) => x.narrow(1, c, 1));
  return r.mul(0.2989).add(g.mul(0.587)).add(b.mul(0.114));
}

/**
 * torchvision's _blend, clamp(f · a + (1 − f) · b, 0, 1), computed as clamp(b + f · (a − b)):
 * `diff` is a − b, a fresh tensor that is modified in place.
 */
function blendInPlace(diff: Tensor, f: Tensor, b: Tensor): Tensor {
  return diff.mul_(f).add_(b).clamp_(0, 1);
}

/**
 * torchvision's adjust_hue on N × 3 × H × W images in [0, 1]; `shift` is N × 1 × 1 (in turns).
 * RGB → HSV as torchvision's _rgb2hsv (same tie-breaking: red, then green, then blue); HSV → RGB
 * with the closed form c = v − v·s·clamp(min(k, 4 − k), 0, 1), k = (n + 6h) mod 6 with n = 5, 3, 1
 * for R, G, B, which equals torchvision's six-sector table without its 15 selects.
 */
export function adjustHue(x: Tensor, shift: Tensor): Tensor {
  const r = x.select(1, 0);
  const g = x.select(1, 1);
  const b = x.select(1, 2);
  const maxc = x.amax(1);
  const minc = x.amin(1);
  const eqc = maxc.eq(minc);
  const cr = maxc.sub(minc);
  const s = cr.div(where(eqc, 1, maxc));
  const crDivisor = where(eqc, 1, cr);
  const rc = maxc.sub(r).div_(crDivisor);
  const gc = maxc.sub(g).div_(crDivisor);
  const bc = maxc.sub(b).div_(crDivisor);
  const isR = maxc.eq(r);
  const isG = maxc.eq(g).logicalAnd(isR.logicalNot());
  // h in sixths of a turn: (bc − gc) where red is largest, 2 + rc − bc for green, 4 + gc − rc for blue.
  const hRed = bc.sub(gc);
  const hGreen = rc.sub(bc).add_(2);
  const hBlue = gc.sub(rc).add_(4);
  const h6 = where(isR, hRed, where(isG, hGreen, hBlue));
  // torchvision: h = fmod(h / 6 + 1, 1), then (h + shift) % 1; kept in turns, then scaled by 6.
  let h = h6.div(6).add_(1).fmod(1);
  h = h.add_(shift).remainder(1).mul_(6).unsqueeze(1); // N × 1 × H × W, in [0, 6)
  const offsets = fromTypedArray(Float32Array.of(5, 3, 1), [1, 3, 1, 1]);
  const k = h.add(offsets).remainder(6); // N × 3 × H × W
  const ramp = k.minimum(k.rsub(4)).clamp_(0, 1);
  const v = maxc.unsqueeze(1);
  const vs = v.mul(s.unsqueeze(1));
  return v.sub(ramp.mul_(vs));
}
