// Optimizers and learning-rate schedules: `import { optim } from "loco"`.
export {
  Optimizer,
  type HyperValue,
  type Hyperparameters,
  type ParamGroup,
  type ResolvedParamGroup,
  type ParamState,
  type JsonValue,
  type OptimizerStateDict,
  type OptimizerStateMeta,
  type StateDictOptions,
  type StateSpec,
} from "./optimizer";
export { SGD, type SGDOptions, type SGDParamGroup } from "./sgd";
export { Adam, AdamW, type AdamOptions, type AdamParamGroup } from "./adam";
export {
  LARS,
  excludeBiasAndNorm,
  type LARSOptions,
  type LARSParamGroup,
  type ExcludeBiasAndNormOptions,
} from "./lars";
export {
  LinearWarmupCosine,
  ConstantLR,
  LRScheduler,
  scaledLearningRate,
  type LRSchedule,
  type LinearWarmupCosineOptions,
  type LRSchedulerState,
  type LRScaling,
  type HasParamGroups,
} from "./schedule";
