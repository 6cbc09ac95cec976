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
  BatchNormBase,
  BatchNorm1d,
  BatchNorm2d,
  withoutRunningStatsUpdate,
  withStashedWeights,
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
  type BatchNormOptions,
  type MaxPool2dOptions,
  type AvgPool2dOptions,
} from "./layers";
export { Sequential, ModuleList } from "./container";
export * as init from "./init";
