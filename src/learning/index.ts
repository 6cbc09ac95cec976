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
export { finetune, defaultFinetuneEpochs, type FinetuneOptions, type FinetuneResult } from "./finetune";
export { exportEncoder, infoPathFor, type EncoderInfo, type ExportResult } from "./export";
