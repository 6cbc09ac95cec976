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
  FEEDBACK_MODES,
  SPLIT_NAMES,
  methodPreset,
  resolveLosses,
  type MethodName,
  type FeedbackMode,
  type LocalLearningConfig,
  type ResolvedLoss,
  type SplitName,
  type SplitSpec,
} from "./methods";
export {
  StageParallelWorker,
  type StageParallelOptions,
  type LateMessages,
  type StageRankStats,
  type StageStepResult,
} from "./stage-parallel";
export {
  STAGE_SCHEDULES,
  assignStages,
  planRanks,
  checkPipelined,
  type RankStages,
  type RankPlan,
  type StageSchedule,
} from "./stage-layout";
export {
  simulatePipeline,
  mergeBlockCosts,
  bestCuts,
  LOOPBACK_LINK,
  type StageCosts,
  type Link,
  type SimulationInput,
  type SimulationResult,
} from "./stage-sim";
export { profileStageCosts, type ProfiledOptimizer } from "./stage-profile";
export { buildStageModel, type StageModelOptions } from "./stage-model";
export { LocalLearner, type StagedEncoder, type LearnerStepResult, type LearnerOptions } from "./learner";
export {
  MetricsWriter,
  readMetrics,
  type MetricsRecord,
  type StepRecord,
  type EpochRecord,
  type SkipRecord,
  type ResumeRecord,
  type RestartRecord,
  type StageRankRecord,
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
  type ParallelMode,
  PARALLEL_MODES,
} from "./options";
export { TrainingError, DivergenceError, type Divergence } from "./errors";
export { buildRunEncoder, encoderFeatures, type RunEncoder, type EncoderFactory } from "./encoders";
export { openRun, readRunConfig, type LoadedRun } from "./runs";
export { readoutReport, BASELINE_NAMES, type BaselineName, type ReadoutReport } from "./readout";
export { MAX_CONSECUTIVE_SKIPS } from "./divergence";
export { type TrainState } from "./state";
export { type TrainModel, buildTrainModel, disposeTrainModel } from "./model";
export { guardedStep, type StepProblem, type StepSync } from "./step";
export { writeJsonAtomic, writeFileAtomic, openRunDirectory, checkFreeSpace } from "./rundir";
export { embedRun, evaluateRun, type EmbedRunOptions, type EvaluateRunOptions, type RunEvaluation } from "./evaluate";
export {
  balancedCuts,
  buildStages,
  describeSplit,
  naturalStages,
  naturalStageChannels,
  parseSplit,
  profileBlocks,
  resolveSplit,
  stageCountOf,
  validateCuts,
  type BlockProfile,
  type SplitRequest,
} from "./split";
export { finetune, defaultFinetuneEpochs, type FinetuneOptions, type FinetuneResult } from "./finetune";
export { exportEncoder, infoPathFor, type EncoderInfo, type ExportResult } from "./export";
