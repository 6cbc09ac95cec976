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
export { train, phaseOfEpoch, type TrainHooks, type TrainOutcome } from "./trainer";
export {
  TRAIN_DEFAULTS,
  resolveTrainOptions,
  describeMethod,
  parseBaselines,
  type TrainInput,
  type TrainOptions,
  type NonFiniteAction,
} from "./options";
export { TrainingError, DivergenceError, type Divergence } from "./errors";
export { buildRunEncoder, encoderFeatures, type RunEncoder, type EncoderFactory } from "./encoders";
export { openRun, readRunConfig, type LoadedRun } from "./runs";
export { readoutReport, BASELINE_NAMES, type BaselineName, type ReadoutReport } from "./readout";
export { MAX_CONSECUTIVE_SKIPS } from "./divergence";
export { type TrainState } from "./state";
export { type TrainModel, buildTrainModel, disposeTrainModel } from "./model";
export { guardedStep, type StepProblem } from "./step";
export { writeJsonAtomic, writeFileAtomic, openRunDirectory, checkFreeSpace } from "./rundir";
export { embedRun, evaluateRun, type EmbedRunOptions, type EvaluateRunOptions, type RunEvaluation } from "./evaluate";
