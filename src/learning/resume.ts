// Resume: the settings a run may not change when it continues (validated against the config its
// checkpoint was written with), and restoring model, optimizer, schedule, generator and TrainState
// from the newest good checkpoint.
import * as path from "node:path";
import { defaultGenerator } from "../torch";
import type { LRScheduler } from "../optim/schedule";
import { type CheckpointMeta, listCheckpoints, loadLatestCheckpoint } from "./checkpoint";
import { TrainingError } from "./errors";
import { type TrainModel, loadModelState } from "./model";
import type { TrainOptions } from "./options";
import { type TrainState, restoreExtra } from "./state";

/** JSON with every object's keys sorted, to compare configs whatever their key order. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
        )
      : v,
  );
}

/** Options that define a run: resuming with another value would silently train a different run. */
const RUN_DEFINING = [
  "method",
  "learning",
  "pretrainData",
  "augment",
  "encoder",
  "batchSize",
  "optimizer",
  "weightDecay",
  "momentum",
  "seed",
  "channelsLast",
] as const;
/** Options a user may change on resume on purpose (they act through the schedule); reported. */
const RUN_ADJUSTABLE = ["epochs", "lr", "warmupEpochs"] as const;

function shortJson(value: unknown): string {
  const text = canonical(value) ?? "undefined";
  return text.length > 60 ? `${text.slice(0, 57)}…` : text;
}

/** The differences between the config a checkpoint was written with and the options of a resume. */
export function compareRunConfigs(
  saved: Record<string, unknown>,
  now: TrainOptions,
): { refused: string[]; changed: string[] } {
  const strip = (key: string, v: unknown): unknown =>
    // The dataset may have moved: its folder is not part of the run's identity. The overlap mode
    // changes memory and time, not gradients.
    key === "pretrainData" && v !== null && typeof v === "object"
      ? { ...(v as Record<string, unknown>), dir: undefined }
      : key === "learning" && v !== null && typeof v === "object"
        ? { ...(v as Record<string, unknown>), overlap: undefined }
        : v;
  const differs = (key: string): boolean =>
    canonical(strip(key, saved[key])) !== canonical(strip(key, now[key as keyof TrainOptions]));
  const isObject = (v: unknown): v is Record<string, unknown> =>
    v !== null && typeof v === "object" && !Array.isArray(v);
  const describe = (key: string): string => {
    const [a, b] = [strip(key, saved[key]), strip(key, now[key as keyof TrainOptions])];
    if (!isObject(a) || !isObject(b)) return `${key} ${shortJson(saved[key])} → ${shortJson(b)}`;
    // Name the fields that differ inside an object setting (learning.split, encoder.width).
    const fields = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter(
      (f) => canonical(a[f]) !== canonical(b[f]),
    );
    return fields.map((f) => `${key}.${f} ${shortJson(a[f])} → ${shortJson(b[f])}`).join("; ");
  };
  return {
    refused: RUN_DEFINING.filter((k) => k in saved && differs(k)).map(describe),
    changed: RUN_ADJUSTABLE.filter((k) => k in saved && differs(k)).map(describe),
  };
}

/** Refuses a resume whose settings differ from the checkpoint's on a run-defining field; warns on the others. */
function checkResumeConfig(
  saved: Record<string, unknown>,
  options: TrainOptions,
  checkpoint: string,
  log: (m: string) => void,
): void {
  const { refused, changed } = compareRunConfigs(saved, options);
  if (refused.length > 0) {
    throw new TrainingError(
      `${checkpoint}: the run was started with other settings (${refused.join("; ")}); ` +
        `resuming would train a different run: restore ${path.join(options.runDir, "config.json")} or start a new run`,
    );
  }
  for (const c of changed)
    log(`warning: resuming with a changed setting: ${c} (the run will differ from an uninterrupted one)`);
  if (saved.threads !== undefined && saved.threads !== options.threads) {
    log(
      `note: the run was started with ${String(saved.threads)} libtorch threads, it continues with ${options.threads}: ` +
        `results can differ in the last bits from an uninterrupted run (pass --threads ${String(saved.threads)} to match)`,
    );
  }
}

/**
 * A parallel run resumes on as many ranks as it was trained on: data parallel, the shards of the
 * data order and the batch per rank depend on the world size; stage parallel, the stages of each
 * rank (the layout must be the same too).
 */
function checkRanks(checkpoint: string, meta: CheckpointMeta, ranks: RankInfo, runDir: string): void {
  const saved = meta.worldSize ?? 1;
  const savedLayout = meta.stageLayout === undefined ? null : JSON.stringify(meta.stageLayout);
  const layout =
    ranks.stageLayout === undefined ? null : JSON.stringify(ranks.stageLayout.map(({ first, last }) => [first, last]));
  if (saved === ranks.worldSize && savedLayout === layout) return;
  const mode = savedLayout !== null ? "stage parallel" : "data parallel";
  const describe = (n: number): string => (n === 1 ? "one process" : `${n} ranks (${mode})`);
  const how =
    saved === 1
      ? `loco train --resume ${runDir}`
      : `loco launch --nproc ${saved} -- train --resume ${runDir} (or --nnodes/--nproc giving ${saved} ranks)`;
  if (saved === ranks.worldSize) {
    throw new TrainingError(
      `${checkpoint} was written by a run with the stages on its ranks laid out as ${savedLayout ?? "one process"}, ` +
        `this resume's are ${layout ?? "one process"}: resuming would train other stages on each rank; resume with: ${how}`,
      2,
    );
  }
  throw new TrainingError(
    `${checkpoint} was written by a run on ${describe(saved)}, this resume runs on ${describe(ranks.worldSize)}: ` +
      (savedLayout !== null
        ? "each rank's stages depend on the world size"
        : "each rank's share of the data and of every batch depends on the world size") +
      `, so the run cannot continue on another; resume with: ${how}`,
    2,
  );
}

/** What a rank checks a checkpoint against: the world size, whether it writes, its stage layout. */
export interface RankInfo {
  worldSize: number;
  writer: boolean;
  /** Stage parallel: every rank's stages. */
  stageLayout?: { first: number; last: number }[];
}

export interface Restored {
  checkpoint: string;
  /** The loader's next batch. */
  position: { epoch: number; batch: number };
}

/**
 * Restores a run from the newest good checkpoint in options.runDir into model, scheduler and
 * state (and libtorch's default generator). Returns null when the run has no checkpoint yet (it
 * starts again from step 0). Bad checkpoints are renamed *.corrupt and the previous one is used.
 */
export function restoreRun(
  options: TrainOptions,
  model: TrainModel,
  scheduler: LRScheduler,
  state: TrainState,
  stepsPerEpoch: number,
  log: (m: string) => void,
  ranks: RankInfo = { worldSize: 1, writer: true },
): Restored | null {
  const runDir = options.runDir;
  const existing = listCheckpoints(runDir).length;
  if (existing === 0) return null;
  // Only the writing rank sets bad checkpoints aside; the others skip the same ones.
  const checkpoint = loadLatestCheckpoint(runDir, (m) => log(`warning: ${m}`), { quarantine: ranks.writer });
  if (checkpoint === null) {
    throw new TrainingError(
      `${runDir}: --resume found no good checkpoint (all ${existing} failed their checks, see above; they were renamed *.corrupt)`,
    );
  }
  const meta = checkpoint.meta;
  try {
    checkRanks(checkpoint.path, meta, ranks, runDir);
    if (meta.config !== undefined) checkResumeConfig(meta.config, options, checkpoint.path, log);
    // A balanced split is re-measured on resume: the stages must still be the ones trained.
    // Checkpoints without a split are older than splits: they trained the encoder's own stages.
    const savedSplit = meta.split ?? model.encoder.naturalSplit();
    if (JSON.stringify(savedSplit) !== JSON.stringify(model.learner.split)) {
      throw new TrainingError(
        `${checkpoint.path}: the run's stages begin at blocks [${savedSplit.join(", ")}], this resume's at ` +
          `[${model.learner.split.join(", ")}]; resuming would train other stages: resume with the run's own --stages/--split`,
      );
    }
    if (meta.position.epoch * stepsPerEpoch + meta.position.batch !== meta.step) {
      throw new TrainingError(
        `${checkpoint.path}: inconsistent run state: step ${meta.step} but loader position epoch ${meta.position.epoch} batch ${meta.position.batch} ` +
          `(${stepsPerEpoch} batches per epoch)`,
      );
    }
    try {
      loadModelState(model, checkpoint.model, checkpoint.path);
      model.optimizer.loadStateDict({ tensors: checkpoint.optimizer, meta: meta.optimizer as never });
    } catch (error) {
      throw new TrainingError(`${checkpoint.path}: does not fit this run's model (${(error as Error).message})`);
    }
  } finally {
    for (const t of [...checkpoint.model.values(), ...checkpoint.optimizer.values()]) t.release();
  }
  state.step = meta.step;
  scheduler.setStep(meta.schedule?.step ?? meta.step);
  defaultGenerator.setState(Uint8Array.from(Buffer.from(meta.generatorState, "base64")));
  restoreExtra(state, meta.extra ?? {});
  state.lastCheckpoint = checkpoint.path;
  state.checkpointStep = meta.step;
  return { checkpoint: checkpoint.path, position: meta.position };
}
