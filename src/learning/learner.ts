// A local learner: an encoder split into stages, one decoder per loss stage, and the gradient
// router. SimCLR end to end, GIM and LoCo are configurations of it (methods.ts).
import type { Tensor } from "../torch";
import { Module } from "../nn/module";
import { ModuleList } from "../nn/container";
import { useFeedbackAlignment } from "../nn/layers";
import type { BlockType } from "../models/resnet";
import type { Generator } from "../torch/random";
import { Decoder } from "./decoder";
import { type LocalLearningConfig, type ResolvedLoss, resolveLosses } from "./methods";
import { ntXent } from "./ntxent";
import { type StageLoss, routeStep } from "./router";
import { buildStages, resolveSplit } from "./split";

/**
 * What the learner needs from an encoder: the encoder as a sequence of blocks (its output is
 * blocks[n−1](…blocks[0](x))), so that stages can be cut at any block boundary.
 */
export interface StagedEncoder {
  /** The blocks in order (for ResNet: the stem, then every residual block); views over the encoder's modules. */
  blocks(): Module[];
  /** Output channels of each block. */
  blockChannels(): number[];
  /** A readable name per block ("stem", "layer1.0", …). */
  blockNames(): string[];
  /** Block indices where the encoder's own stages 2, 3, … begin (the "resnet" split). */
  naturalSplit(): number[];
  /** The encoder's residual block type, used for decoder conv blocks. */
  readonly block?: BlockType;
}

export interface LearnerOptions {
  generator?: Generator;
  /** One input's shape [C, H, W]: needed by the balanced splits, which profile the blocks on it. */
  inputShape?: readonly number[];
}

export interface LearnerStepResult {
  /** Loss per entry of `learner.losses` (NaN for losses not trained this step). */
  lossValues: number[];
}

/** A contrastive loss of a stage's embeddings [2N, d] (rows i and i+N: the two views of image i). */
export type ContrastiveLoss = (z: Tensor, temperature: number) => Tensor;

export class LocalLearner extends Module {
  readonly losses: ResolvedLoss[];
  /**
   * The loss of every stage: NT-Xent over this process's batch, or (data parallel) this rank's
   * share of NT-Xent over the global batch (src/parallel/ntxent.ts).
   */
  contrastiveLoss: ContrastiveLoss = ntXent;
  readonly decoders: ModuleList;
  readonly config: LocalLearningConfig;
  readonly #stages: Module[];
  /** Block indices where stages 2…K begin (the resolved split). */
  readonly split: number[];
  /** Sequential schedule: index into `losses` of the phase being trained; null when simultaneous. */
  #phase: number | null = null;

  constructor(encoder: StagedEncoder, config: LocalLearningConfig, options: LearnerOptions = {}) {
    super();
    this.split = resolveSplit(encoder, config, options.inputShape);
    this.#stages = buildStages(encoder, this.split);
    const blockChannels = encoder.blockChannels();
    const channels = [...this.split, blockChannels.length].map((end) => blockChannels[end - 1]);
    this.config = config;
    this.losses = resolveLosses(config, this.#stages.length);
    this.decoders = this.registerModule(
      "decoders",
      new ModuleList(
        this.losses.map(
          (l) =>
            new Decoder({
              inChannels: channels[l.stage],
              convBlocks: config.convBlocks,
              mlpLayers: config.mlpLayers,
              headBN: config.headBN,
              block: encoder.block,
              generator: options.generator,
            }),
        ),
      ),
    );
    // Feedback alignment: every conv and linear layer of the stages and decoders gets its fixed
    // matrix, drawn after the decoders' init from the same generator (so a seed fixes both).
    if ((config.feedback ?? "backprop") === "alignment") {
      for (const m of [...this.#stages, this.decoders]) useFeedbackAlignment(m, { generator: options.generator });
    }
    if (config.schedule === "sequential") this.setPhase(0);
  }

  get stages(): Module[] {
    return this.#stages;
  }

  decoder(lossIndex: number): Decoder {
    return this.decoders.children()[lossIndex] as Decoder;
  }

  get phase(): number | null {
    return this.#phase;
  }

  /**
   * Sequential schedule: trains loss `index` only. Stages below its reach are frozen (eval mode,
   * no gradient), stages above it are not computed.
   */
  setPhase(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.losses.length) {
      throw new RangeError(`setPhase: expected a phase in 0..${this.losses.length - 1}, got ${index}`);
    }
    this.#phase = index;
    this.train(this.training);
  }

  /** Which stages are trained now (all in simultaneous mode). */
  trainableStages(): boolean[] {
    if (this.#phase === null) return this.#stages.map(() => true);
    const loss = this.losses[this.#phase];
    return this.#stages.map((_, k) => k >= loss.stage - loss.reach && k <= loss.stage);
  }

  override train(mode = true): this {
    super.train(mode);
    const trainable = this.trainableStages();
    this.#stages.forEach((s, k) => s.train(mode && trainable[k]));
    return this;
  }

  /** Parameters of the stages and decoders trained now. */
  trainableParameters(): Tensor[] {
    const trainable = this.trainableStages();
    const stageParams = this.#stages.flatMap((s, k) => (trainable[k] ? s.parameters() : []));
    const decoderParams = this.#phase === null ? this.decoders.parameters() : this.decoder(this.#phase).parameters();
    return [...stageParams, ...decoderParams];
  }

  /** All parameters: stages and decoders. */
  allParameters(): Tensor[] {
    return [...this.#stages.flatMap((s) => s.parameters()), ...this.decoders.parameters()];
  }

  /**
   * One step's forward and backward on a batch of 2N views (rows i and i+N are the two views of
   * image i). Gradients accumulate into the parameters; the caller steps the optimizer.
   */
  step(views: Tensor): LearnerStepResult {
    const active = this.#phase === null ? this.losses.map((_, i) => i) : [this.#phase];
    const specs: StageLoss[] = active.map((i) => {
      const l = this.losses[i];
      return {
        stage: l.stage,
        reach: l.reach,
        decoder: this.decoder(i),
        loss: (z: Tensor) => this.contrastiveLoss(z, l.temperature),
      };
    });
    const result = routeStep(this.#stages, specs, views, { overlap: this.config.overlap });
    const lossValues = new Array<number>(this.losses.length).fill(NaN);
    active.forEach((i, j) => (lossValues[i] = result.lossValues[j]));
    return { lossValues };
  }
}
