// The methods as presets of one mechanism (docs/methods.md): losses at which stages, reach, decoder
// conv blocks c, MLP depth m, head BN, temperature per stage, schedule.

import type { Overlap } from "./router";

export type MethodName = "simclr" | "gim" | "loco";
export const METHOD_NAMES: readonly MethodName[] = ["simclr", "gim", "loco"];

/**
 * How gradients travel backward through convolution and linear layers: exact backprop, or feedback
 * alignment (Lillicrap et al. 2016: a fixed random matrix of the weight's shape in the weight's
 * place for the input gradient; batch norm and the loss stay exact).
 */
export type FeedbackMode = "backprop" | "alignment";
export const FEEDBACK_MODES: readonly FeedbackMode[] = ["backprop", "alignment"];

/**
 * How the encoder's blocks are cut into stages: "resnet" keeps the encoder's own stages (ResNet's
 * four); the balanced splits cut K contiguous groups minimising the largest group's activation
 * bytes or FLOPs; a list gives the block indices where stages 2…K begin.
 */
export type SplitName = "resnet" | "balanced-memory" | "balanced-compute";
export const SPLIT_NAMES: readonly SplitName[] = ["resnet", "balanced-memory", "balanced-compute"];
export type SplitSpec = SplitName | number[];

export interface LocalLearningConfig {
  /** 1-based stages that carry a loss (S_1 … S_K). */
  lossStages: number[];
  /** Reach of each loss: one number for all, or one per entry of lossStages. */
  reach: number | number[];
  /** Residual blocks in each decoder (c). */
  convBlocks: number;
  /** Linear layers in each decoder's MLP (m). */
  mlpLayers: number;
  /** BN inside the MLP head. */
  headBN: boolean;
  /** NT-Xent temperature: one for all losses or one per entry of lossStages. */
  temperature: number | number[];
  /** simultaneous: every stage trains every step; sequential: one phase per loss stage, lower stages frozen. */
  schedule: "simultaneous" | "sequential";
  /** Backward pass of the encoder's and decoders' conv and linear layers (default "backprop"). */
  feedback?: FeedbackMode;
  /** Encoder stages K (default: the encoder's own count, or the split list's length + 1). */
  stages?: number;
  /** Where stages are cut (default "resnet"). */
  split?: SplitSpec;
  /** Keep a stage's graph for messages from higher losses, or recompute it (default "retain"; router.ts). */
  overlap?: Overlap;
}

/** The preset for a method on an encoder with `stageCount` stages (K). */
export function methodPreset(method: MethodName, stageCount: number, temperature = 0.5): LocalLearningConfig {
  const all = Array.from({ length: stageCount }, (_, i) => i + 1);
  switch (method) {
    case "simclr":
      return {
        lossStages: [stageCount],
        reach: stageCount - 1,
        convBlocks: 0,
        mlpLayers: 2,
        headBN: true,
        temperature,
        schedule: "simultaneous",
        feedback: "backprop",
      };
    case "gim":
      return {
        lossStages: all,
        reach: 0,
        convBlocks: 0,
        mlpLayers: 2,
        headBN: true,
        temperature,
        schedule: "simultaneous",
        feedback: "backprop",
      };
    case "loco":
      return {
        lossStages: all,
        reach: 1,
        convBlocks: 1,
        mlpLayers: 2,
        headBN: true,
        temperature,
        schedule: "simultaneous",
        feedback: "backprop",
      };
  }
}

/** Resolved per-loss settings: 0-based stage, reach clipped to the stages below, temperature. */
export interface ResolvedLoss {
  stage: number;
  reach: number;
  temperature: number;
}

function perLoss(value: number | number[], count: number, field: string): number[] {
  if (typeof value === "number") return new Array<number>(count).fill(value);
  if (!Array.isArray(value) || value.length !== count) {
    throw new RangeError(
      `${field}: expected one number or an array of ${count} (one per loss stage), got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/**
 * Validates a config against an encoder with `stageCount` stages and lists its losses. A reach
 * larger than the stages below a loss is clipped (LoCo's reach 1 at S_1 has nothing below it).
 */
export function resolveLosses(config: LocalLearningConfig, stageCount: number): ResolvedLoss[] {
  if (config.feedback !== undefined && !FEEDBACK_MODES.includes(config.feedback)) {
    throw new RangeError(
      `feedback: expected one of ${FEEDBACK_MODES.join(", ")}, got ${JSON.stringify(config.feedback)}`,
    );
  }
  const stages = config.lossStages;
  if (!Array.isArray(stages) || stages.length === 0) throw new RangeError("lossStages: expected at least one stage");
  const seen = new Set<number>();
  for (const s of stages) {
    if (!Number.isInteger(s) || s < 1 || s > stageCount) {
      throw new RangeError(`lossStages: stage ${JSON.stringify(s)} is not in 1..${stageCount}`);
    }
    if (seen.has(s)) throw new RangeError(`lossStages: stage ${s} is listed twice`);
    seen.add(s);
  }
  const reaches = perLoss(config.reach, stages.length, "reach");
  const temps = perLoss(config.temperature, stages.length, "temperature");
  return stages
    .map((s, i) => {
      const reach = reaches[i];
      if (!Number.isInteger(reach) || reach < 0) throw new RangeError(`reach: expected integers >= 0, got ${reach}`);
      if (!(temps[i] > 0)) throw new RangeError(`temperature: expected positive numbers, got ${temps[i]}`);
      return { stage: s - 1, reach: Math.min(reach, s - 1), temperature: temps[i] };
    })
    .sort((a, b) => a.stage - b.stage);
}
