// Checkpoints: one safetensors file per checkpoint, written atomically (temporary file, fsync,
// rename, directory fsync), holding the model's and the optimizer's tensors; the run state (step,
// loader position, schedule step, generator state, optimizer metadata, the resolved config) and a
// SHA-256 checksum of all tensor bytes travel in its metadata. The last K are kept.
//
// A process killed mid-write (kill -9, power loss, a second Ctrl-C) leaves at most a hidden
// temporary file beside the checkpoints: never a partial step-*.safetensors. Such leftovers are
// removed by removeStaleTemporaries() when a run (re)starts.
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { type Tensor, loadSafetensors, saveSafetensors } from "../torch";

export const CHECKPOINT_FORMAT = "loco-checkpoint-v1";

/** The run state stored beside the tensors. */
export interface CheckpointMeta {
  format: typeof CHECKPOINT_FORMAT;
  /** Optimizer steps done. */
  step: number;
  /** The loader's next batch. */
  position: { epoch: number; batch: number };
  /** Sequential schedule phase (null when simultaneous). */
  phase: number | null;
  /** Optimizer metadata (hyperparameters, per-parameter step counts). */
  optimizer: unknown;
  /** libtorch's default generator state, base64. */
  generatorState: string;
  /** The learning-rate schedule's state: steps taken, and the learning rate of each group for the next step. */
  schedule?: { step: number; lrs: number[] };
  /** The resolved training options the run was started with (JSON). */
  config?: Record<string, unknown>;
  /** Block indices where encoder stages 2…K begin (absent in older checkpoints: the encoder's own stages). */
  split?: number[];
  /** Anything else the trainer wants back (metrics so far, timings). */
  extra?: Record<string, unknown>;
  /** Ranks of the data-parallel run that wrote it (absent: one process); a resume must use as many. */
  worldSize?: number;
  /** Stage parallel: each rank's first and last stage (0-based); a resume must use the same. */
  stageLayout?: [number, number][];
}

export interface Checkpoint {
  meta: CheckpointMeta;
  /** Model tensors by state-dict key (prefixed "encoder." and "decoders."). */
  model: Map<string, Tensor>;
  /** Optimizer state tensors by their stateDict key. */
  optimizer: Map<string, Tensor>;
  path: string;
}

/**
 * SHA-256 over every tensor (name, shape, dtype, bytes; in name order) and, unless null, the run
 * state's JSON text, so that a flipped byte anywhere in the file is caught.
 */
function checksum(entries: [string, Tensor][], meta: string | null): string {
  const hash = createHash("sha256");
  for (const [name, t] of [...entries].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    hash.update(name);
    hash.update(JSON.stringify(t.shape));
    hash.update(t.dtype);
    const data = t.data();
    hash.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }
  if (meta !== null) {
    hash.update("\0loco-run-state\0");
    hash.update(meta);
  }
  return hash.digest("hex");
}

export function checkpointDir(runDir: string): string {
  return path.join(runDir, "checkpoints");
}

/** The metadata marker of checksums that cover the run state too (older files cover the tensors only). */
const CHECKSUM_COVERS = "tensors+state";

const NAME = /^step-(\d{9})\.safetensors$/;

/** Checkpoint files of a run, oldest first. */
export function listCheckpoints(runDir: string): string[] {
  const dir = checkpointDir(runDir);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => NAME.test(f))
    .sort()
    .map((f) => path.join(dir, f));
}

/** The file of step `step`'s checkpoint in a run directory. */
export function checkpointPath(runDir: string, step: number): string {
  return path.join(checkpointDir(runDir), `step-${String(step).padStart(9, "0")}.safetensors`);
}

/** Writes a checkpoint atomically and deletes all but the newest `keep`. Returns its path. */
export function saveCheckpoint(
  runDir: string,
  meta: CheckpointMeta,
  model: Map<string, Tensor>,
  optimizer: Map<string, Tensor>,
  keep = 3,
): string {
  const dir = checkpointDir(runDir);
  fs.mkdirSync(dir, { recursive: true });
  const tensors = new Map<string, Tensor>();
  for (const [k, v] of model) tensors.set(`model.${k}`, v);
  for (const [k, v] of optimizer) tensors.set(`optim.${k}`, v);
  const file = checkpointPath(runDir, meta.step);
  const state = JSON.stringify(meta);
  saveSafetensors(file, tensors, { loco: state, sha256: checksum([...tensors], state), covers: CHECKSUM_COVERS });
  const all = listCheckpoints(runDir);
  for (const old of all.slice(0, Math.max(0, all.length - Math.max(1, keep)))) {
    if (old !== file) fs.rmSync(old, { force: true });
  }
  return file;
}

export class CheckpointError extends Error {
  override name = "CheckpointError";
}

const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/** What is wrong with a parsed run state (null when nothing is), naming the field. */
function metaProblem(meta: CheckpointMeta): string | null {
  if (!isCount(meta.step)) return `'step' must be a non-negative integer, got ${JSON.stringify(meta.step)}`;
  const pos = meta.position as unknown as Record<string, unknown> | null;
  if (typeof pos !== "object" || pos === null || !isCount(pos.epoch) || !isCount(pos.batch)) {
    return `'position' must be { epoch, batch } of non-negative integers, got ${JSON.stringify(meta.position)}`;
  }
  if (meta.phase !== null && !isCount(meta.phase))
    return `'phase' must be null or a non-negative integer, got ${JSON.stringify(meta.phase)}`;
  if (typeof meta.generatorState !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(meta.generatorState)) {
    return "'generatorState' must be a base64 string";
  }
  if (meta.schedule !== undefined) {
    const sch = meta.schedule as unknown as Record<string, unknown> | null;
    if (
      typeof sch !== "object" ||
      sch === null ||
      !isCount(sch.step) ||
      !Array.isArray(sch.lrs) ||
      !sch.lrs.every((x) => Number.isFinite(x))
    ) {
      return `'schedule' must be { step, lrs } (a step count and finite learning rates), got ${JSON.stringify(meta.schedule)}`;
    }
  }
  if (meta.worldSize !== undefined && !(isCount(meta.worldSize) && meta.worldSize >= 1))
    return `'worldSize' must be a positive integer, got ${JSON.stringify(meta.worldSize)}`;
  if (
    meta.stageLayout !== undefined &&
    !(
      Array.isArray(meta.stageLayout) &&
      meta.stageLayout.every((l) => Array.isArray(l) && l.length === 2 && l.every(isCount))
    )
  )
    return `'stageLayout' must be a list of [first, last] stages, got ${JSON.stringify(meta.stageLayout)}`;
  if (meta.split !== undefined && !(Array.isArray(meta.split) && meta.split.every(isCount)))
    return `'split' must be an array of block indices, got ${JSON.stringify(meta.split)}`;
  if (
    meta.config !== undefined &&
    (typeof meta.config !== "object" || meta.config === null || Array.isArray(meta.config))
  ) {
    return "'config' must be an object";
  }
  return null;
}

// Temporary files of loco's atomic writers, with the writer's pid: saveSafetensors' (checkpoints,
// embeddings) .<name>.<pid>.<random>.tmp, and writeFileAtomic's (config.json, results.json, eval
// reports) <name>.tmp-<pid>.
const TEMPS = [/^\..+\.(\d+)\.[0-9a-f]+\.tmp$/, /^.+\.tmp-(\d+)$/];

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Deletes temporary files of loco's writers that no longer run (a process killed or failing while
 * writing) in the run directory and its checkpoints. Returns the files removed.
 */
export function removeStaleTemporaries(runDir: string): string[] {
  const removed: string[] = [];
  for (const dir of [runDir, checkpointDir(runDir)]) {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      const m = TEMPS.map((t) => t.exec(name)).find((x) => x !== null);
      if (m === undefined || m === null || processAlive(Number(m[1]))) continue;
      fs.rmSync(path.join(dir, name), { force: true });
      removed.push(path.join(dir, name));
    }
  }
  return removed;
}

/** Loads and verifies one checkpoint file (format, metadata, checksum). */
export function loadCheckpoint(file: string): Checkpoint {
  let contents;
  try {
    contents = loadSafetensors(file);
  } catch (error) {
    // A truncated or overwritten file fails here (the header and the data section disagree).
    throw new CheckpointError(`${file}: not a readable checkpoint (${(error as Error).message})`);
  }
  const release = (): void => {
    for (const t of contents.tensors.values()) t.release();
  };
  const rawMeta = contents.metadata.loco;
  const expected = contents.metadata.sha256;
  if (rawMeta === undefined || expected === undefined) {
    release();
    throw new CheckpointError(`${file}: not a loco checkpoint (no run state or checksum in its metadata)`);
  }
  const actual = checksum([...contents.tensors], contents.metadata.covers === CHECKSUM_COVERS ? rawMeta : null);
  if (actual !== expected) {
    release();
    throw new CheckpointError(
      `${file}: checksum mismatch (the file is corrupted: SHA-256 ${actual.slice(0, 12)}…, recorded ${expected.slice(0, 12)}…)`,
    );
  }
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(rawMeta) as CheckpointMeta;
  } catch {
    release();
    throw new CheckpointError(`${file}: the run state is not valid JSON`);
  }
  const problem =
    typeof meta !== "object" || meta === null
      ? "not an object"
      : meta.format !== CHECKPOINT_FORMAT
        ? `unknown checkpoint format ${JSON.stringify(meta.format)}`
        : metaProblem(meta);
  if (problem !== null) {
    release();
    throw new CheckpointError(`${file}: invalid run state: ${problem}`);
  }
  const model = new Map<string, Tensor>();
  const optimizer = new Map<string, Tensor>();
  for (const [k, v] of contents.tensors) {
    if (k.startsWith("model.")) model.set(k.slice(6), v);
    else if (k.startsWith("optim.")) optimizer.set(k.slice(6), v);
    else v.release();
  }
  return { meta, model, optimizer, path: file };
}

export interface LoadLatestOptions {
  /**
   * Rename each checkpoint that fails to load to <name>.corrupt, so that it is kept for inspection
   * but no longer counts among the newest K (a resumed run would otherwise delete good
   * checkpoints while keeping corrupted newer ones). For a run about to continue; default false.
   */
  quarantine?: boolean;
}

/**
 * The newest checkpoint of a run that loads and verifies; corrupted ones are reported through
 * `warn` and skipped. Null when the run has none.
 */
export function loadLatestCheckpoint(
  runDir: string,
  warn: (message: string) => void = () => {},
  options: LoadLatestOptions = {},
): Checkpoint | null {
  const files = listCheckpoints(runDir).reverse();
  for (const [i, file] of files.entries()) {
    try {
      return loadCheckpoint(file);
    } catch (error) {
      const previous = files[i + 1];
      let moved = "";
      if (options.quarantine) {
        try {
          fs.renameSync(file, `${file}.corrupt`);
          moved = ` (moved aside to ${path.basename(file)}.corrupt)`;
        } catch {
          // leave it; it is still skipped
        }
      }
      warn(
        `${(error as Error).message}${moved}; ` +
          (previous === undefined
            ? "no earlier checkpoint to fall back to"
            : `falling back to the previous checkpoint ${previous}`),
      );
    }
  }
  return null;
}
