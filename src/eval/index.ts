// Evaluation protocols (docs/methods.md, "Evaluation as implemented"): frozen-feature extraction, linear
// readout, weighted kNN, and the baselines (random-init, supervised, raw pixels) on the same
// protocol: `import { evaluation } from "loco"` or `import * as evaluation from "loco/eval"`.
export {
  type EvalBatch,
  type FeatureSet,
  type ExtractOptions,
  type EvalBatches,
  type StageLike,
  type ViewBatch,
  fromViewBatches,
  extractFeatures,
  extractStageFeatures,
  disposeFeatureSet,
  withEval,
  withEvalAll,
  globalAvgPool,
  rawPixelsFeatures,
  stageFeatures,
  stageForward,
} from "./features";
export {
  type LinearReadoutOptions,
  type LinearReadoutResult,
  type WeightDecayTrial,
  DEFAULT_WEIGHT_DECAY_GRID,
  ReadoutDivergedError,
  linearReadout,
  topkAccuracy,
} from "./linear";
export { type KnnOptions, type KnnResult, knnClassify } from "./knn";
export {
  type Encoder,
  type BatchSource,
  type EvaluateStage,
  type EvaluateOptions,
  type EvaluateResult,
  type SupervisedOptions,
  type SupervisedEpoch,
  type SupervisedResult,
  concatFeatureSets,
  evaluateEncoder,
  featureForward,
  trainSupervised,
} from "./baselines";
