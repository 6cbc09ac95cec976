export { ntXent } from "./ntxent";
export {
  routeStep,
  validateLosses,
  OVERLAP_MODES,
  type Forwardable,
  type StageLoss,
  type RouteResult,
  type RouteOptions,
  type Overlap,
} from "./router";
export { Decoder, type DecoderOptions } from "./decoder";
export {
  METHOD_NAMES,
  SPLIT_NAMES,
  methodPreset,
  resolveLosses,
  type MethodName,
  type LocalLearningConfig,
  type ResolvedLoss,
  type SplitName,
  type SplitSpec,
} from "./methods";
export { LocalLearner, type StagedEncoder, type LearnerStepResult, type LearnerOptions } from "./learner";
export {
  balancedCuts,
  buildStages,
  describeSplit,
  parseSplit,
  profileBlocks,
  resolveSplit,
  stageCountOf,
  validateCuts,
  type BlockProfile,
  type SplitRequest,
} from "./split";
