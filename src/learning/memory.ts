// Peak training-step memory per method, split and overlap mode (docs/methods.md, "Memory"),
// measured with the engine's counting allocator: bytes held by libtorch during one step of forward
// + backward. Also the per-block activation bytes and a budget search (largest batch, largest image).
import {
  type Tensor,
  Generator,
  collectGarbage,
  memoryStats,
  randn,
  resetPeakMemory,
  scope,
  zerosLike,
} from "../torch";
import { type ResNetDepth, type ResNetStem, ResNet } from "../models/resnet";
import { LocalLearner } from "./learner";
import { type LocalLearningConfig, type MethodName, type SplitSpec, methodPreset } from "./methods";
import type { Overlap } from "./router";
import { type BlockProfile, balancedCuts, costOf, profileBlocks, stageCountOf } from "./split";

export interface MemoryMeasureOptions {
  depth: ResNetDepth;
  stem: ResNetStem;
  width?: number;
  inChannels?: number;
  imageSize: number;
  /** Images per step; each contributes two views. */
  batchSize: number;
  channelsLast?: boolean;
  /** Config overrides applied to every preset (e.g. mlpLayers, stages, split, overlap). */
  overrides?: Partial<LocalLearningConfig>;
  /** Time a second, warm step (default true); the budget search only needs the bytes. */
  timeStep?: boolean;
  /**
   * Allocate every gradient buffer before the step (zeroed, as `zeroGrad(false)` or PyTorch 1.x's
   * `zero_grad()` keep them). Default false: the step starts without gradients, as every step of
   * `loco train` does (its optimizer sets them to none before the forward).
   */
  preallocateGradients?: boolean;
}

export interface MethodMemory {
  method: MethodName;
  /** Most bytes libtorch held during the step (weights and gradients included). */
  peakBytes: number;
  /**
   * Peak minus the bytes held when the step started (weights, inputs, and gradient buffers when
   * preallocated): what the step adds.
   */
  activationPeakBytes: number;
  /** Bytes held at the step's start. */
  baselineBytes: number;
  /** Wall time of a second, warm step (the first is the one whose memory is measured); NaN if not timed. */
  stepSeconds: number;
  /** Block indices where stages 2…K began. */
  split: number[];
}

function buildEncoder(options: MemoryMeasureOptions): ResNet {
  return new ResNet({
    depth: options.depth,
    stem: options.stem,
    width: options.width ?? 64,
    inChannels: options.inChannels ?? 3,
    numClasses: 0,
    channelsLast: options.channelsLast ?? false,
    generator: new Generator(0),
  });
}

function randomViews(options: MemoryMeasureOptions, batchSize: number, imageSize: number): Tensor {
  const views = randn([2 * batchSize, options.inChannels ?? 3, imageSize, imageSize], { generator: new Generator(2) });
  return options.channelsLast ? views.channelsLast() : views;
}

/**
 * Measures one training step of `method` as the trainer runs it: the gradients are set to none
 * first, so each is allocated when backward first reaches its parameter (with
 * `preallocateGradients`, all of them before the step, and the activation peak is then
 * activations only).
 */
export function measureMethodMemory(method: MethodName, options: MemoryMeasureOptions): MethodMemory {
  return scope(() => {
    const encoder = buildEncoder(options);
    const overrides = options.overrides ?? {};
    const config = {
      ...methodPreset(method, stageCountOf(overrides, encoder.naturalSplit().length + 1)),
      ...overrides,
    };
    const learner = new LocalLearner(encoder, config, {
      generator: new Generator(1),
      inputShape: [options.inChannels ?? 3, options.imageSize, options.imageSize],
    });
    learner.train();
    const parameters = learner.allParameters();
    const clearGradients = (): void => {
      for (const p of parameters) p.grad = options.preallocateGradients ? zerosLike(p) : null;
    };
    clearGradients();
    const views = randomViews(options, options.batchSize, options.imageSize);
    // Garbage freed during the step would lower its measured peak (collectGarbage says how much).
    collectGarbage();
    const baselineBytes = memoryStats().currentBytes;
    resetPeakMemory();
    learner.step(views);
    const peakBytes = memoryStats().peakBytes;
    clearGradients();
    // The step is timed a second time: the first includes one-time costs (kernel selection and
    // primitive caches, first-touch page faults) that would make the first setting measured look
    // slowest whatever it is.
    let stepSeconds = Number.NaN;
    if (options.timeStep ?? true) {
      const started = process.hrtime.bigint();
      learner.step(views);
      stepSeconds = Number(process.hrtime.bigint() - started) / 1e9;
    }
    const split = learner.split;
    learner.dispose();
    encoder.dispose();
    return { method, peakBytes, activationPeakBytes: peakBytes - baselineBytes, baselineBytes, stepSeconds, split };
  });
}

/**
 * Each block's activation bytes and FLOPs at the measured batch (one forward, autograd recording),
 * and the encoder's own split.
 */
export function measureBlocks(options: MemoryMeasureOptions): { profiles: BlockProfile[]; naturalSplit: number[] } {
  return scope(() => {
    const encoder = buildEncoder(options);
    const views = randomViews(options, options.batchSize, options.imageSize);
    const profiles = profileBlocks(encoder, views);
    const naturalSplit = encoder.naturalSplit();
    encoder.dispose();
    return { profiles, naturalSplit };
  });
}

/** One row of the planner: a method with a split and an overlap mode. */
export interface MemorySetting {
  method: MethodName;
  split: SplitSpec;
  /** Stages K (for balanced splits; "resnet" has the encoder's own). */
  stages?: number;
  overlap: Overlap;
}

/** A setting's cuts, from block profiles already measured (the balanced splits' costs). */
export function settingCuts(
  setting: MemorySetting,
  profiles: readonly BlockProfile[],
  naturalSplit: number[],
): number[] {
  const split = setting.split;
  if (split === "resnet") return naturalSplit;
  if (Array.isArray(split)) return split;
  return balancedCuts(costOf(profiles, split), setting.stages ?? naturalSplit.length + 1);
}

/** Activation bytes per stage of a split: the sums of its blocks'. */
export function stageBytes(profiles: readonly BlockProfile[], cuts: readonly number[]): number[] {
  const bounds = [0, ...cuts, profiles.length];
  return bounds.slice(1).map((end, s) => profiles.slice(bounds[s], end).reduce((a, p) => a + p.activationBytes, 0));
}

/** The config overrides that make a learner train `setting` with the given cuts. */
export function settingOverrides(setting: MemorySetting, cuts: number[]): Partial<LocalLearningConfig> {
  return { stages: cuts.length + 1, split: cuts, overlap: setting.overlap };
}

/**
 * The largest n in [min, max] with fits(n), assuming fits is monotone (true up to a point). Gallops
 * from `guess` (steps 1, 2, 4, … up or down) until it holds a fitting and a failing n, then bisects:
 * every answer is measured, and a good guess costs few probes. null when not even `min` fits.
 */
export function largestFitting(fits: (n: number) => boolean, guess: number, min: number, max: number): number | null {
  let probe = Math.min(max, Math.max(min, Math.round(guess)));
  let lo: number;
  let hi: number;
  if (fits(probe)) {
    lo = probe;
    for (let step = 1; ; step *= 2) {
      if (lo === max) return max;
      const next = Math.min(max, lo + step);
      if (!fits(next)) {
        hi = next;
        break;
      }
      lo = next;
    }
  } else {
    hi = probe;
    for (let step = 1; ; step *= 2) {
      if (hi === min) return null;
      probe = Math.max(min, hi - step);
      if (fits(probe)) {
        lo = probe;
        break;
      }
      hi = probe;
    }
  }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** The smallest contrastive batch: NT-Xent needs another image's views as negatives. */
export const SMALLEST_BATCH = 2;

export interface BudgetResult {
  /** Largest batch (images, two views each) at the options' image size; null: not even the smallest fits. */
  batchSize: number | null;
  /** Largest square image size (a multiple of `imageStep`) at the smallest batch; null: none fits. */
  imageSize: number | null;
}

/**
 * Under `budgetBytes` of peak memory (weights, gradients and activations; optimizer state not
 * included), the largest batch at the options' image size and the largest image size at the
 * smallest batch (2 images), each by a measured search. The first guesses extrapolate two
 * measurements linearly (peak memory grows about linearly in the batch and in the pixel count).
 */
export function budgetSearch(
  method: MethodName,
  options: MemoryMeasureOptions,
  budgetBytes: number,
  imageStep = 32,
  onProbe?: (what: string, peakBytes: number) => void,
): BudgetResult {
  const peaks = new Map<string, number>();
  const peak = (batchSize: number, imageSize: number): number => {
    const key = `${batchSize}@${imageSize}`;
    let bytes = peaks.get(key);
    if (bytes === undefined) {
      bytes = measureMethodMemory(method, { ...options, batchSize, imageSize, timeStep: false }).peakBytes;
      peaks.set(key, bytes);
      onProbe?.(`batch ${batchSize} at ${imageSize} px`, bytes);
    }
    return bytes;
  };
  const size = options.imageSize;
  const b0 = SMALLEST_BATCH;
  const extrapolate = (x1: number, y1: number, x2: number, y2: number): number =>
    y2 > y1 ? x1 + ((budgetBytes - y1) * (x2 - x1)) / (y2 - y1) : x2;
  const batchGuess = peak(b0, size) > budgetBytes ? b0 : extrapolate(b0, peak(b0, size), 2 * b0, peak(2 * b0, size));
  const batchSize = largestFitting((b) => peak(b, size) <= budgetBytes, batchGuess, b0, 1 << 16);
  // Image sizes in steps of imageStep (ResNet downsamples by 32): search over the step count.
  const minSteps = Math.max(1, Math.ceil(64 / imageStep));
  const px = (steps: number): number => steps * imageStep;
  const base = Math.max(minSteps, Math.round(size / imageStep));
  const area = (steps: number): number => px(steps) ** 2;
  const sizeGuess =
    peak(b0, px(base)) > budgetBytes
      ? minSteps
      : Math.sqrt(extrapolate(area(base), peak(b0, px(base)), area(base + 2), peak(b0, px(base + 2)))) / imageStep;
  const steps = largestFitting((s) => peak(b0, px(s)) <= budgetBytes, Math.floor(sizeGuess), minSteps, 1 << 10);
  return { batchSize, imageSize: steps === null ? null : px(steps) };
}

/** Parses a byte size: 8GiB, 512MiB, 1.5GB, 1000000 (bytes). */
export function parseBytes(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?\s*$/i.exec(text);
  if (m === null) throw new RangeError(`expected a size like 8GiB, 512MiB or 2GB, got '${text}'`);
  const units: Record<string, number> = {
    b: 1,
    kib: 2 ** 10,
    mib: 2 ** 20,
    gib: 2 ** 30,
    tib: 2 ** 40,
    kb: 1e3,
    mb: 1e6,
    gb: 1e9,
    tb: 1e12,
  };
  const bytes = Math.floor(Number(m[1]) * units[(m[2] ?? "b").toLowerCase()]);
  if (!(bytes > 0)) throw new RangeError(`expected a positive size, got '${text}'`);
  return bytes;
}

/**
 * Whether an overlap mode can change anything for a config: "recompute" only for losses reaching
 * below their stage (late messages); "recompute-all" and "recompute-min" always (they separate
 * stage and decoder graphs).
 */
export function overlapMatters(config: LocalLearningConfig, overlap: Overlap = "recompute"): boolean {
  if (overlap === "retain") return false;
  if (overlap === "recompute-all" || overlap === "recompute-min") return true;
  const reaches = Array.isArray(config.reach) ? config.reach : [config.reach];
  return reaches.some((r) => r > 0);
}
