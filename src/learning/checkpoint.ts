// Checkpoints: one safetensors file per checkpoint, written atomically (temporary file, fsync,
// rename), holding the model's and the optimizer's tensors; the run state (step, epoch, loader
// position, schedule, generator state, optimizer metadata) and a SHA-256 checksum of all tensor
// bytes travel in its metadata. The last K are kept.
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { type Tensor, loadSafetensors, readSafetensorsHeader, saveSafetensors } from "../torch";

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
  /** Anything else the trainer wants back (metrics so far, timings). */
  extra?: Record<string, unknown>;
}

export interface Checkpoint {
  meta: CheckpointMeta;
  /** Model tensors by state-dict key (prefixed "encoder." and "decoders."). */
  model: Map<string, Tensor>;
  /** Optimizer state tensors by their stateDict key. */
  optimizer: Map<string, Tensor>;
  path: string;
}

function checksum(entries: [string, Tensor][]): string {
  const hash = createHash("sha256");
  for (const [name, t] of [...entries].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    hash.update(name);
    hash.update(JSON.stringify(t.shape));
    hash.update(t.dtype);
    const data = t.data();
    hash.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }
  return hash.digest("hex");
}

export function checkpointDir(runDir: string): string {
  return path.join(runDir, "checkpoints");
}

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
  const file = path.join(dir, `step-${String(meta.step).padStart(9, "0")}.safetensors`);
  saveSafetensors(file, tensors, { loco: JSON.stringify(meta), sha256: checksum([...tensors]) });
  const all = listCheckpoints(runDir);
  for (const old of all.slice(0, Math.max(0, all.length - Math.max(1, keep)))) fs.rmSync(old, { force: true });
  return file;
}

export class CheckpointError extends Error {
  override name = "CheckpointError";
}

/** Loads and verifies one checkpoint file (format, metadata, checksum). */
export function loadCheckpoint(file: string): Checkpoint {
  let header;
  try {
    header = readSafetensorsHeader(file);
  } catch (error) {
    throw new CheckpointError(`${file}: not a readable checkpoint (${(error as Error).message})`);
  }
  const rawMeta = header.metadata?.loco;
  const expected = header.metadata?.sha256;
  if (rawMeta === undefined || expected === undefined) throw new CheckpointError(`${file}: not a loco checkpoint (no run state or checksum)`);
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(rawMeta) as CheckpointMeta;
  } catch {
    throw new CheckpointError(`${file}: the run state is not valid JSON`);
  }
  if (meta.format !== CHECKPOINT_FORMAT) throw new CheckpointError(`${file}: unknown checkpoint format ${JSON.stringify(meta.format)}`);
  let contents;
  try {
    contents = loadSafetensors(file);
  } catch (error) {
    throw new CheckpointError(`${file}: ${(error as Error).message}`);
  }
  const actual = checksum([...contents.tensors]);
  if (actual !== expected) {
    for (const t of contents.tensors.values()) t.release();
    throw new CheckpointError(`${file}: checksum mismatch (the file is corrupted)`);
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

/**
 * The newest checkpoint of a run that loads and verifies; corrupted ones are reported through
 * `warn` and skipped. Null when the run has none.
 */
export function loadLatestCheckpoint(runDir: string, warn: (message: string) => void = () => {}): Checkpoint | null {
  const files = listCheckpoints(runDir).reverse();
  for (const file of files) {
    try {
      return loadCheckpoint(file);
    } catch (error) {
      warn(`${(error as Error).message}; falling back to the previous checkpoint`);
    }
  }
  return null;
}
