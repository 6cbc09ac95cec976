// results.json: what a finished run reports (the readout report, what was trained, how fast).
import type { LocalLearningConfig, MethodName } from "./methods";
import type { ReadoutReport } from "./readout";

/** The readout fields are absent when the run was made with readout "none". */
export interface Results extends Partial<ReadoutReport> {
  method: MethodName;
  /** The method's full settings in words, e.g. "gim (losses 1,2,3,4, reach 0, c 1, m 2, t 0.5, simultaneous)". */
  methodSettings: string;
  learning: LocalLearningConfig;
  dataset: string;
  encoder: string;
  epochs: number;
  training: {
    seconds: number;
    steps: number;
    imagesPerSecond: number;
    dataWaitShare: number;
    finalLoss: number[];
  };
}
