export { ntXent } from "./ntxent";
export { routeStep, validateLosses, type Forwardable, type StageLoss, type RouteResult } from "./router";
export { Decoder, type DecoderOptions } from "./decoder";
export {
  METHOD_NAMES,
  methodPreset,
  resolveLosses,
  type MethodName,
  type LocalLearningConfig,
  type ResolvedLoss,
} from "./methods";
export { LocalLearner, type StagedEncoder, type LearnerStepResult } from "./learner";
export {
  MetricsWriter,
  readMetrics,
  type MetricsRecord,
  type StepRecord,
  type EpochRecord,
  type SkipRecord,
  type ResumeRecord,
  type RestartRecord,
  type ResultsRecord,
} from "./metrics";
export type { Results } from "./results";
