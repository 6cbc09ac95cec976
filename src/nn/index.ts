// loco's torch.nn: Module, layers, containers and initialisers.
export {
  Module,
  StateDictError,
  type LoadStateDictOptions,
  type LoadStateDictResult,
  type StateDictSource,
} from "./module";
export {
  Conv2d,
  Linear,
  ReLU,
  MaxPool2d,
  AvgPool2d,
  AdaptiveAvgPool2d,
  Flatten,
  Identity,
  Dropout,
  useFeedbackAlignment,
  type IntPair,
  type ParameterOptions,
  type Conv2dOptions,
  type LinearOptions,
  type MaxPool2dOptions,
  type AvgPool2dOptions,
} from "./layers";
export { BatchNormBase, BatchNorm1d, BatchNorm2d, withoutRunningStatsUpdate, type BatchNormOptions } from "./batchnorm";
export { withStashedWeights } from "./stash";
export { Sequential, ModuleList } from "./container";
export * as init from "./init";
