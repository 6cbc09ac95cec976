// Stages at any block boundary (docs/methods.md, "Memory"): an encoder is a sequence of blocks
// (for ResNet: the stem, then every residual block), and a split cuts it into K contiguous stages.
// "resnet" is the encoder's own stages; the balanced splits minimise the largest stage's activation
// bytes (measured with the counting allocator on one forward) or FLOPs.
import { type Tensor, Generator, memoryStats, randn, scope } from "../torch";
import type { Module } from "../nn/module";
import { Conv2d, Linear } from "../nn/layers";
import { withoutRunningStatsUpdate } from "../nn/batchnorm";
import { Sequential } from "../nn/container";
import type { StagedEncoder } from "./learner";
import { SPLIT_NAMES, type SplitName, type SplitSpec } from "./methods";

/** What one block of an encoder costs on a given input. */
export interface BlockProfile {
  name: string;
  /** Bytes the block's forward leaves held with autograd recording: its saved activations and output. */
  activationBytes: number;
  /** Multiply-adds × 2 of its convolutions and linear layers, one forward. */
  flops: number;
  /** Output shape. */
  shape: number[];
}

/** Adds `flops` for every conv and linear layer inside `block` while `run` executes. */
function countingFlops<T>(block: Module, run: () => T): { result: T; flops: number } {
  let flops = 0;
  const wrapped: Module[] = [];
  // Per-instance wrappers, removed afterwards, see each layer's output shape without a hook API.
  for (const m of block.modules()) {
    if (m instanceof Conv2d) {
      const perOutput = (m.inChannels / m.groups) * m.kernelSize[0] * m.kernelSize[1];
      const forward = Conv2d.prototype.forward;
      m.forward = (x: Tensor): Tensor => {
        const y = forward.call(m, x);
        flops += 2 * y.numel() * perOutput;
        return y;
      };
      wrapped.push(m);
    } else if (m instanceof Linear) {
      const forward = Linear.prototype.forward;
      m.forward = (x: Tensor): Tensor => {
        const y = forward.call(m, x);
        flops += 2 * y.numel() * m.inFeatures;
        return y;
      };
      wrapped.push(m);
    }
  }
  try {
    return { result: run(), flops };
  } finally {
    for (const m of wrapped) Reflect.deleteProperty(m, "forward");
  }
}

/**
 * Runs each block forward once on `sample` (in the blocks' current mode, autograd recording, batch
 * norm running statistics untouched) and measures what it holds and computes. Scales linearly
 * with the batch, so a batch of 2 suffices for choosing a split.
 */
export function profileBlocks(encoder: StagedEncoder, sample: Tensor): BlockProfile[] {
  const blocks = encoder.blocks();
  const names = encoder.blockNames();
  return scope(() =>
    withoutRunningStatsUpdate(() => {
      const profiles: BlockProfile[] = [];
      let x = sample;
      blocks.forEach((block, i) => {
        const input = i === 0 ? x : x.detach().requiresGrad_(true);
        const before = memoryStats().currentBytes;
        const { result: h, flops } = countingFlops(block, () => scope(() => block.forward(input)));
        const activationBytes = memoryStats().currentBytes - before;
        profiles.push({ name: names[i], activationBytes, flops, shape: h.shape });
        x = h.detach();
        h.dispose(); // frees the block's graph; the detached output lives on as the next input
      });
      return profiles;
    }),
  );
}

/**
 * A random batch of 2 samples of shape [C, H, W] in the encoder's dtype, from its own generator
 * (the run's random stream is untouched).
 */
export function profileSample(encoder: StagedEncoder, inputShape: readonly number[]): Tensor {
  const dtype = encoder.blocks()[0].parameters()[0]?.dtype ?? "float32";
  return randn([2, ...inputShape], { generator: new Generator(0), dtype });
}

/**
 * Cuts costs into `k` contiguous non-empty groups minimising the largest group's sum (linear
 * partition, dynamic programming). Returns the indices where groups 2…k begin.
 */
export function balancedCuts(costs: readonly number[], k: number): number[] {
  const n = costs.length;
  if (!Number.isInteger(k) || k < 1 || k > n) throw new RangeError(`cannot cut ${n} blocks into ${k} stages`);
  const prefix = [0];
  for (const c of costs) prefix.push(prefix[prefix.length - 1] + c);
  const sum = (a: number, b: number): number => prefix[b] - prefix[a];
  // best[g][i]: the smallest largest-group sum of the first i blocks in g groups; from[g][i]: where group g begins.
  const best = Array.from({ length: k + 1 }, () => new Array<number>(n + 1).fill(Infinity));
  const from = Array.from({ length: k + 1 }, () => new Array<number>(n + 1).fill(0));
  best[0][0] = 0;
  for (let g = 1; g <= k; g++) {
    for (let i = g; i <= n; i++) {
      for (let j = g - 1; j < i; j++) {
        const cost = Math.max(best[g - 1][j], sum(j, i));
        if (cost < best[g][i]) {
          best[g][i] = cost;
          from[g][i] = j;
        }
      }
    }
  }
  const cuts: number[] = [];
  for (let g = k, i = n; g > 1; g--) {
    i = from[g][i];
    cuts.unshift(i);
  }
  return cuts;
}

/** Throws unless `cuts` are the block indices where stages 2…K of an n-block encoder begin. */
export function validateCuts(cuts: readonly number[], blockCount: number, field = "split"): void {
  let previous = 0;
  for (const c of cuts) {
    if (!Number.isInteger(c) || c <= previous || c >= blockCount) {
      throw new RangeError(
        `${field}: expected increasing block indices in 1..${blockCount - 1} (where stages 2, 3, … begin), got ${JSON.stringify(cuts)}`,
      );
    }
    previous = c;
  }
}

export interface SplitRequest {
  /** Stages K (default: the encoder's own count, or the list's length + 1). */
  stages?: number;
  /** Default "resnet". */
  split?: SplitSpec;
}

/**
 * The block indices where stages 2…K begin. Balanced splits profile the blocks on a batch of
 * `inputShape` ([C, H, W]), which they then need.
 */
export function resolveSplit(encoder: StagedEncoder, request: SplitRequest, inputShape?: readonly number[]): number[] {
  const blockCount = encoder.blocks().length;
  const natural = encoder.naturalSplit();
  const split = request.split ?? "resnet";
  const k = request.stages;
  if (k !== undefined && (!Number.isInteger(k) || k < 1 || k > blockCount)) {
    throw new RangeError(
      `stages: expected an integer in 1..${blockCount} (the encoder has ${blockCount} blocks), got ${k}`,
    );
  }
  if (Array.isArray(split)) {
    validateCuts(split, blockCount);
    if (k !== undefined && k !== split.length + 1) {
      throw new RangeError(`stages: ${k} stages need ${k - 1} block indices in split, got ${split.length}`);
    }
    return [...split];
  }
  if (!SPLIT_NAMES.includes(split)) {
    throw new RangeError(
      `split: expected ${SPLIT_NAMES.join(", ")} or a list of block indices, got ${JSON.stringify(split)}`,
    );
  }
  if (split === "resnet") {
    if (k !== undefined && k !== natural.length + 1) {
      throw new RangeError(
        `stages: split "resnet" has the encoder's own ${natural.length + 1} stages, not ${k}: use a balanced split or block indices`,
      );
    }
    return [...natural];
  }
  if (inputShape === undefined) throw new RangeError(`split "${split}" needs the input shape to profile the blocks`);
  const sample = profileSample(encoder, inputShape);
  try {
    const profiles = profileBlocks(encoder, sample);
    return balancedCuts(costOf(profiles, split), k ?? natural.length + 1);
  } finally {
    sample.dispose();
  }
}

/** The per-block cost a balanced split minimises. */
export function costOf(profiles: readonly BlockProfile[], split: Exclude<SplitName, "resnet">): number[] {
  return profiles.map((p) => (split === "balanced-memory" ? p.activationBytes : p.flops));
}

/** The stages of a split as modules: stage s runs blocks cuts[s−1] … cuts[s]−1 (views over the encoder's blocks). */
export function buildStages(encoder: StagedEncoder, cuts: readonly number[]): Sequential[] {
  const blocks = encoder.blocks();
  validateCuts(cuts, blocks.length);
  const bounds = [0, ...cuts, blocks.length];
  return bounds.slice(1).map((end, s) => new Sequential(...blocks.slice(bounds[s], end)));
}

/** The encoder's own stages (its natural split), e.g. ResNet's four: per-stage readouts read these. */
export function naturalStages(encoder: StagedEncoder): Sequential[] {
  return buildStages(encoder, encoder.naturalSplit());
}

/** Output channels of each of the encoder's own stages (its last block's). */
export function naturalStageChannels(encoder: StagedEncoder): number[] {
  const channels = encoder.blockChannels();
  return [...encoder.naturalSplit(), channels.length].map((end) => channels[end - 1]);
}

/** A split as text, "0-3 | 4-7 | 8-13 | 14-16" (block index ranges per stage). */
export function describeSplit(cuts: readonly number[], blockCount: number): string {
  const bounds = [0, ...cuts, blockCount];
  return bounds
    .slice(1)
    .map((end, s) => (end - 1 === bounds[s] ? `${bounds[s]}` : `${bounds[s]}-${end - 1}`))
    .join(" | ");
}

/** Parses a split as written on the command line: a split name or comma-separated block indices. */
export function parseSplit(text: string): SplitSpec {
  const trimmed = text.trim();
  if ((SPLIT_NAMES as readonly string[]).includes(trimmed)) return trimmed as SplitName;
  const parts = trimmed.split(",").map((p) => p.trim());
  if (parts.length === 0 || !parts.every((p) => /^\d+$/.test(p))) {
    throw new RangeError(
      `expected ${SPLIT_NAMES.join(", ")} or comma-separated block indices where stages 2, 3, … begin (e.g. 4,8,14), got '${text}'`,
    );
  }
  return parts.map(Number);
}

/** Stages K a split request gives on an encoder whose own split has `naturalStages` stages. */
export function stageCountOf(request: SplitRequest, naturalStages: number): number {
  return request.stages ?? (Array.isArray(request.split) ? request.split.length + 1 : naturalStages);
}
