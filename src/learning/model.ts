// What a run trains: the encoder, the local learner (decoders and router) and the optimizer, with
// the state-dict naming shared by checkpoints and diagnoses ("encoder.*", "decoders.*").
import type { Tensor } from "../torch";
import type { DType } from "../torch/dtype";
import { Generator } from "../torch/random";
import { LARS, excludeBiasAndNorm } from "../optim/lars";
import { SGD } from "../optim/sgd";
import { Adam } from "../optim/adam";
import { type RunEncoder, buildRunEncoder } from "./encoders";
import { LocalLearner } from "./learner";
import type { TrainOptions } from "./options";
import { TrainingError } from "./errors";

export type AnyOptimizer = LARS | SGD | Adam;

/** The trained parameters grouped by encoder stage (1-based), decoders apart, with state-dict names. */
export interface ParamGroupInfo {
  stage: number;
  label: string;
  params: [string, Tensor][];
}

export interface TrainModel {
  encoder: RunEncoder;
  learner: LocalLearner;
  optimizer: AnyOptimizer;
  /** Every trained parameter by state-dict name. */
  named: [string, Tensor][];
  groups: ParamGroupInfo[];
  /** Buffers (batch-norm statistics) of the encoder and decoders, by state-dict name. */
  buffers: [string, Tensor][];
}

function buildOptimizer(options: TrainOptions, named: [string, Tensor][]): AnyOptimizer {
  switch (options.optimizer) {
    case "lars":
      return new LARS(excludeBiasAndNorm(named), {
        lr: options.lr,
        momentum: options.momentum,
        weightDecay: options.weightDecay,
      });
    case "sgd":
      return new SGD(excludeBiasAndNorm(named, { lars: false }), {
        lr: options.lr,
        momentum: options.momentum,
        weightDecay: options.weightDecay,
      });
    case "adam":
      return new Adam(excludeBiasAndNorm(named, { lars: false }), {
        lr: options.lr,
        weightDecay: options.weightDecay,
      });
  }
}

function parameterGroups(encoder: RunEncoder, learner: LocalLearner): ParamGroupInfo[] {
  const names = new Map<Tensor, string>(encoder.namedParameters().map(([k, v]) => [v, `encoder.${k}`]));
  const groups: ParamGroupInfo[] = learner.stages.map((s, k) => ({
    stage: k + 1,
    label: `stage ${k + 1}`,
    params: s
      .parameters()
      .map((p, j): [string, Tensor] => [names.get(p) ?? `encoder stage ${k + 1} parameter ${j}`, p]),
  }));
  learner.losses.forEach((l, i) =>
    groups.push({
      stage: l.stage + 1,
      label: `the decoder of stage ${l.stage + 1}`,
      params: learner
        .decoder(i)
        .namedParameters()
        .map(([k, v]): [string, Tensor] => [`decoders.${i}.${k}`, v]),
    }),
  );
  return groups;
}

/**
 * Builds the encoder, learner and optimizer of a run, its parameters and buffers in `dtype`
 * (float32 for every run; float64 lets tests compare two runs beyond float32 rounding). Whatever
 * fails midway is disposed; the caller disposes the result with disposeTrainModel.
 */
export function buildTrainModel(options: TrainOptions, inChannels: number, dtype: DType = "float32"): TrainModel {
  const encoder = buildRunEncoder(options, inChannels).to(dtype);
  let learner: LocalLearner | null = null;
  try {
    const side = options.augment.size;
    const [viewHeight, viewWidth] = typeof side === "number" ? [side, side] : side;
    try {
      learner = new LocalLearner(encoder, options.learning, {
        generator: new Generator(options.seed + 1),
        // The balanced splits measure the blocks on one input of the views' shape.
        inputShape: [inChannels, viewHeight, viewWidth],
      });
    } catch (error) {
      throw new TrainingError(`learning: ${(error as Error).message}`, 2);
    }
    learner.decoders.to(dtype);
    const named: [string, Tensor][] = [
      ...encoder.namedParameters().map(([k, v]): [string, Tensor] => [`encoder.${k}`, v]),
      ...learner.decoders.namedParameters().map(([k, v]): [string, Tensor] => [`decoders.${k}`, v]),
    ];
    const optimizer = buildOptimizer(options, named);
    return {
      encoder,
      learner,
      optimizer,
      named,
      groups: parameterGroups(encoder, learner),
      buffers: [
        ...encoder.namedBuffers().map(([k, v]): [string, Tensor] => [`encoder.${k}`, v]),
        ...learner.decoders.namedBuffers().map(([k, v]): [string, Tensor] => [`decoders.${k}`, v]),
      ],
    };
  } catch (error) {
    learner?.dispose();
    encoder.dispose();
    throw error;
  }
}

export function disposeTrainModel(model: TrainModel): void {
  model.learner.dispose();
  model.encoder.dispose();
  model.optimizer.dispose();
}

/** The model's tensors by checkpoint name. */
export function modelState(model: TrainModel): Map<string, Tensor> {
  const state = new Map<string, Tensor>();
  for (const [k, v] of model.encoder.stateDict()) state.set(`encoder.${k}`, v);
  for (const [k, v] of model.learner.decoders.stateDict()) state.set(`decoders.${k}`, v);
  return state;
}

export function loadModelState(model: TrainModel, state: Map<string, Tensor>, source: string): void {
  const enc = new Map<string, Tensor>();
  const dec = new Map<string, Tensor>();
  for (const [k, v] of state) {
    if (k.startsWith("encoder.")) enc.set(k.slice(8), v);
    else if (k.startsWith("decoders.")) dec.set(k.slice(9), v);
    else throw new Error(`${source}: unexpected tensor '${k}' in the model state`);
  }
  model.encoder.loadStateDict(enc);
  model.learner.decoders.loadStateDict(dec);
}
