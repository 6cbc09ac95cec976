// The trainer's data-wait share on a streamed image folder, for `node dist/bench/data.js --wait
// SIZE:WORKERS:STEPS`: SimCLR with torchvision's ResNet-18 (width 64, --wait-width) trained through
// the library's `train()` for STEPS steps of batch --stream-batch-size on a subset of the folder,
// one libtorch thread for the step and WORKERS data workers, no evaluation. The trainer's own
// figures are recorded after every step (its progress line: cumulative images/s and data-wait
// share, from which the cumulative step and wait times follow), so the bench reports the share over
// the whole run (what `metrics.jsonl` says at the end), the wait for the first batch (the workers
// start and decode it while the model is built; the queue is empty) and the share in steady state,
// after the first WARM_STEPS steps. RSS of the trainer's process (its workers included) is sampled
// after every step (start: after the first).
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { writeSyntheticFolder } from "../src/data";
import { train } from "../src/learning";
import { Progress, type ProgressFields } from "../src/learning/progress";

/** Steps left out of the steady-state share: the queue fills while they train. */
export const WARM_STEPS = 5;

export interface WaitRow {
  size: number;
  workers: number;
  steps: number;
  width: number;
  batchSize: number;
  /** Mean seconds per step, its wait for data included. */
  stepSeconds: number;
  /** Seconds the first step waited for its batch. */
  firstWaitSeconds: number;
  /** Σ wait / Σ step time over the whole run (the trainer's `dataWaitShare`). */
  dataWaitShare: number;
  /** The same over steps WARM_STEPS + 1 … STEPS. */
  steadyDataWaitShare: number;
  steadyFromStep: number;
  rssStartMiB: number;
  rssMaxMiB: number;
  rssEndMiB: number;
}

const rssMiB = (): number => process.memoryUsage().rss / 2 ** 20;
const silent = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;

/** The trainer's progress, kept for every step instead of printed. */
class StepRecorder extends Progress {
  readonly steps: { trainSeconds: number; waitSeconds: number; rssMiB: number }[] = [];
  constructor(private readonly batchSize: number) {
    super(silent, { interactive: false });
  }
  override update(fields: ProgressFields, force = false): void {
    // Cumulative over the run: images/s = steps × batch / step time; share = wait / step time.
    const trainSeconds = (fields.step * this.batchSize) / fields.imagesPerSecond;
    this.steps.push({ trainSeconds, waitSeconds: fields.dataWait * trainSeconds, rssMiB: rssMiB() });
    super.update(fields, force);
  }
}

/** A labelled folder for the readout splits the trainer lists (not read: no evaluation runs). */
async function readoutFolder(dir: string): Promise<string | undefined> {
  if (["val", "test"].some((split) => fs.existsSync(path.join(dir, split)))) return undefined;
  const tiny = fs.mkdtempSync(path.join(os.tmpdir(), "loco-bench-readout-"));
  await writeSyntheticFolder(tiny, { classes: 2, train: 2, val: 1, sizes: [32, 48], seed: 1 });
  return tiny;
}

export async function benchWait(
  dir: string,
  size: number,
  workers: number,
  steps: number,
  options: { width: number; batchSize: number },
): Promise<WaitRow> {
  const { width, batchSize } = options;
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), "loco-bench-wait-"));
  const readoutDataDir = await readoutFolder(dir);
  const recorder = new StepRecorder(batchSize);
  try {
    await train(
      {
        method: "simclr",
        dataset: "folder",
        dataDir: dir,
        ...(readoutDataDir === undefined ? {} : { readoutDataDir }),
        imageSize: size,
        encoder: "resnet18",
        width,
        batchSize,
        epochs: 1,
        trainSubset: steps * batchSize,
        workers,
        threads: 1,
        knnEvery: 0,
        readout: "none",
        baselines: "none",
        runDir,
      },
      { log: () => {}, progress: recorder },
    );
  } finally {
    fs.rmSync(runDir, { recursive: true, force: true });
    if (readoutDataDir !== undefined) fs.rmSync(readoutDataDir, { recursive: true, force: true });
  }
  const s = recorder.steps;
  if (s.length !== steps) throw new Error(`the trainer reported ${s.length} steps, expected ${steps}`);
  const last = s[s.length - 1];
  const warm = Math.min(WARM_STEPS, steps - 1);
  const before = warm > 0 ? s[warm - 1] : { trainSeconds: 0, waitSeconds: 0 };
  const rss = s.map((x) => x.rssMiB);
  return {
    size,
    workers,
    steps,
    width,
    batchSize,
    stepSeconds: last.trainSeconds / steps,
    firstWaitSeconds: s[0].waitSeconds,
    dataWaitShare: last.waitSeconds / last.trainSeconds,
    steadyDataWaitShare: (last.waitSeconds - before.waitSeconds) / (last.trainSeconds - before.trainSeconds),
    steadyFromStep: warm + 1,
    rssStartMiB: rss[0],
    rssMaxMiB: Math.max(...rss),
    rssEndMiB: rss[rss.length - 1],
  };
}
