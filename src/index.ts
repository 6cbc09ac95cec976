// loco's public surface: the engine (torch), layers (nn), optimizers (optim), models, data,
// evaluation and learning as namespaces (also importable as "loco/torch", "loco/nn", …), and the
// trainer's entry points at the top level: `import { train } from "loco"`.
export * as torch from "./torch";
export * as nn from "./nn";
export * as optim from "./optim";
export * as models from "./models";
export * as learning from "./learning";
export * as evaluation from "./eval";
export * as data from "./data";
export {
  train,
  LocalLearner,
  TRAIN_DEFAULTS,
  type TrainInput,
  type TrainOptions,
  type TrainOutcome,
  type TrainHooks,
  type StagedEncoder,
  type EncoderFactory,
} from "./learning";
export { VERSION } from "./version";
export * as parallel from "./parallel";
