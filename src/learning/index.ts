export { ntXent } from "./ntxent";
export { routeStep, validateLosses, type Forwardable, type StageLoss, type RouteResult } from "./router";
export { Decoder, type DecoderOptions } from "./decoder";
export {
  METHOD_NAMES,
  FEEDBACK_MODES,
  methodPreset,
  resolveLosses,
  type MethodName,
  type FeedbackMode,
  type LocalLearningConfig,
  type ResolvedLoss,
} from "./methods";
export { LocalLearner, type StagedEncoder, type LearnerStepResult } from "./learner";
