// results.json: what a finished run reports (the readout report, what was trained, how fast).
import type { MethodName } from "./methods";
import type { ReadoutReport } from "./readout";

export interface Results extends ReadoutReport {
  method: MethodName;
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
