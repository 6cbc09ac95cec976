// The errors the trainer reports to users (printed without a stack trace by the CLI).

/**
 * An error the user caused or can act on (bad options or run directory, full disk, divergence):
 * the CLI prints its message without a stack trace and exits with `exitCode` (2: a usage mistake).
 */
export class TrainingError extends Error {
  override name = "TrainingError";
  readonly userFacing = true;
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/** Where and how a run diverged. */
export interface Divergence {
  /** The optimizer step (1-based) that produced it. */
  step: number;
  epoch: number;
  /** 1-based encoder stage. */
  stage: number;
  /** What was non-finite: a loss, a gradient, the weights themselves, or a buffer (batch-norm statistics). */
  kind: "loss" | "gradient" | "weights" | "buffer";
  value?: number;
  /** The parameter (state-dict name), for a gradient or weights. */
  parameter?: string;
  /** The last finite loss of each loss stage, and the step it came from. */
  lastFinite: { stage: number; loss: number; step: number }[];
  /** The newest checkpoint on disk (left as it was), or null. */
  checkpoint: string | null;
}

/** Training diverged (onNonfinite "stop", or too many skipped steps in a row). Exit code 3. */
export class DivergenceError extends TrainingError {
  override name = "DivergenceError";
  constructor(
    message: string,
    readonly divergence: Divergence,
  ) {
    super(message, 3);
  }
}
