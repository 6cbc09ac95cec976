// The data loader: seeded per-epoch shuffling, augmented views, and batches prepared ahead in
// worker threads while the current batch trains.
//
// Determinism: the order of epoch e is a permutation drawn from Rng(seed, SHUFFLE, e), and the
// augmentation of view v of batch b of epoch e uses Rng(seed, AUGMENT, e, b, v) (prepare.ts). A
// batch is therefore a pure function of (seed, epoch, batch): `position` saved with a checkpoint
// and passed back as `start` (or to seek()) resumes with exactly the batches an uninterrupted run
// would have seen, whatever the number of workers.
//
// Sharding (data parallel): with `shard: { rank, count }`, batch b is the rank's slice of global
// batch b (count × batchSize images of the same order, rank r taking the r-th run of batchSize),
// augmented as part of the global batch. The ranks' shards never overlap, and together they are
// exactly the batch a single process with batchSize × count sees, augmentations included.
//
// Overlap: with workers ≥ 1, the loader keeps the next batch and `prefetch` more requested, from
// its construction on (the workers start while the caller builds its model); the workers read and
// augment them (each with one libtorch thread by default) and transfer the float32 pixels back, and
// the main thread only wraps them in tensors. Each batch reports waitMs, the time next() kept the
// caller waiting, so a trainer can log the share of step time spent waiting for data.
//
// Streamed image folders (./stream.ts) go through the same loader: the workers decode each image
// with its crop as they prepare a batch (one batch at a time per worker), under the same
// determinism contract; files found bad are collected here (badImages, onBadImage, badImagesFile).
import * as fs from "node:fs";
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import { type Tensor, fromTypedArray, keep } from "../torch";
import { Augmentation, type AugmentConfig } from "./augment";
import type { ImageDataset } from "./dataset";
import { type BadImage, BadImageError } from "./folder";
import { type PreparedBatch, prepareBatch, recycleBuffers } from "./prepare";
import { type StreamedFiles, prepareStreamingBatch, streamedFiles } from "./stream";
import { Rng } from "./rng";
import type { WorkerInit, WorkerReply, WorkerRequest } from "./worker";

const SHUFFLE_STREAM = 0x5f1;
/** How long close() waits for a worker to exit before terminating it. */
const CLOSE_GRACE_MS = 10_000;

/** Where a loader stands: the next batch it returns is batch `batch` of epoch `epoch`. */
export interface LoaderPosition {
  epoch: number;
  batch: number;
}

export interface LoaderOptions {
  batchSize: number;
  /**
   * The augmentation of each view: one config for all (with `views`), or one per view. For
   * evaluation use evalTransform() and one view.
   */
  augment: AugmentConfig | AugmentConfig[];
  /** Views per image when `augment` is a single config (default 2, SimCLR's pair). */
  views?: number;
  /** Reshuffle every epoch (default true); false keeps the dataset's order. */
  shuffle?: boolean;
  /** Drop the last, incomplete batch of an epoch (default true). */
  dropLast?: boolean;
  /** Seed of the order and of the augmentations (default 0). */
  seed?: number;
  /** Worker threads preparing batches (default 1); 0 prepares them on the calling thread, in next(). */
  workers?: number;
  /** libtorch threads in each worker (default 1). */
  workerThreads?: number;
  /** Batches requested ahead of the one next() is waiting for (default 2; with workers only). */
  prefetch?: number;
  /** Start here instead of (0, 0): resume from a saved `position`. */
  start?: LoaderPosition;
  /** Streamed image folders: told about each bad file skipped (once per file). */
  onBadImage?: (bad: BadImage) => void;
  /** Streamed image folders: keep the list of skipped files here ("path<TAB>reason" lines, rewritten atomically). */
  badImagesFile?: string;
  /** This rank's shard of each global batch (data parallel; needs dropLast). Default: no sharding. */
  shard?: { rank: number; count: number };
}

/** One batch: the caller owns its tensors (dispose() frees them). */
export interface Batch {
  /** One float32 NCHW tensor per view. */
  views: Tensor[];
  /** Class indices (int64), or null for a label-free dataset. */
  labels: Tensor | null;
  /** The dataset indices of the images, in batch order. */
  indices: Int32Array;
  epoch: number;
  /** Index of this batch within its epoch. */
  batch: number;
  /** Milliseconds next() kept the caller waiting for this batch. */
  waitMs: number;
  /** Milliseconds a worker (or the caller, with workers: 0) spent reading and augmenting it. */
  prepareMs: number;
  dispose(): void;
}

export interface LoaderStats {
  batches: number;
  waitMs: number;
  prepareMs: number;
}

/** A prepared batch; streamed folders add the dataset index behind each position and the bad files found. */
type Prepared = PreparedBatch & { indices?: Int32Array; bad?: BadImage[] };

interface Job {
  promise: Promise<Prepared>;
  indices: Int32Array;
  /** The worker preparing it (undefined: this thread). */
  worker?: number;
}

interface Pending {
  resolve: (b: Prepared) => void;
  reject: (e: Error) => void;
  worker: number;
}

function positiveInt(v: unknown, field: string, min = 1): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
    throw new RangeError(`DataLoader: ${field} must be an integer >= ${min}, got ${String(v)}`);
  }
  return v;
}

export class DataLoader {
  readonly dataset: ImageDataset;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly seed: number;
  readonly configs: AugmentConfig[];
  readonly batchesPerEpoch: number;
  /** This loader's shard: rank `shardRank` of `shardCount` (0 of 1 unsharded). */
  readonly shardRank: number;
  readonly shardCount: number;
  readonly #augmentations: Augmentation[];
  readonly #prefetch: number;
  #epoch: number;
  #batch: number;
  #order = new Map<number, Int32Array>();
  #jobs = new Map<string, Job>();
  #workers: Worker[] = [];
  #pending = new Map<number, Pending>();
  #nextJobId = 0;
  #jobsSent = 0;
  #failure: Error | null = null;
  #closed = false;
  #stats: LoaderStats = { batches: 0, waitMs: 0, prepareMs: 0 };
  readonly #streamed: StreamedFiles | null;
  readonly #bad = new Map<string, string>();
  readonly #onBadImage?: (bad: BadImage) => void;
  readonly #badImagesFile?: string;

  constructor(dataset: ImageDataset, options: LoaderOptions) {
    this.dataset = dataset;
    this.batchSize = positiveInt(options.batchSize, "batchSize");
    this.shuffle = options.shuffle ?? true;
    this.dropLast = options.dropLast ?? true;
    this.seed = options.seed ?? 0;
    if (!Number.isInteger(this.seed) || this.seed < 0)
      throw new RangeError(`DataLoader: seed must be a non-negative integer, got ${this.seed}`);
    if (Array.isArray(options.augment)) {
      if (options.views !== undefined && options.views !== options.augment.length) {
        throw new RangeError(
          `DataLoader: views is ${options.views} but augment lists ${options.augment.length} configs`,
        );
      }
      if (options.augment.length === 0) throw new RangeError("DataLoader: augment lists no config");
      this.configs = options.augment;
    } else {
      this.configs = Array.from(
        { length: positiveInt(options.views ?? 2, "views") },
        () => options.augment as AugmentConfig,
      );
    }
    this.#augmentations = this.configs.map((c) => new Augmentation(c));
    if (dataset.count === 0) throw new RangeError(`DataLoader: ${dataset.name} is empty`);
    this.shardCount = positiveInt(options.shard?.count ?? 1, "shard.count");
    this.shardRank = positiveInt(options.shard?.rank ?? 0, "shard.rank", 0);
    if (this.shardRank >= this.shardCount) {
      throw new RangeError(
        `DataLoader: shard.rank must be below shard.count (${this.shardCount}), got ${this.shardRank}`,
      );
    }
    if (this.shardCount > 1 && !this.dropLast) {
      throw new RangeError("DataLoader: sharding needs dropLast (every rank must get a full batch every step)");
    }
    const globalBatch = this.batchSize * this.shardCount;
    this.batchesPerEpoch = this.dropLast
      ? Math.floor(dataset.count / globalBatch)
      : Math.ceil(dataset.count / globalBatch);
    if (this.batchesPerEpoch === 0) {
      throw new RangeError(
        `DataLoader: batchSize ${this.batchSize}${this.shardCount > 1 ? ` × ${this.shardCount} ranks` : ""} exceeds the ${dataset.count} images of ${dataset.name} with dropLast`,
      );
    }
    this.#prefetch = positiveInt(options.prefetch ?? 2, "prefetch");
    const start = options.start ?? { epoch: 0, batch: 0 };
    this.#epoch = positiveInt(start.epoch, "start.epoch", 0);
    this.#batch = positiveInt(start.batch, "start.batch", 0);
    this.#normalise();
    const workers = options.workers ?? 1;
    positiveInt(workers, "workers", 0);
    const threads = positiveInt(options.workerThreads ?? 1, "workerThreads");
    const spec = dataset.images.spec();
    this.#streamed = streamedFiles(spec);
    this.#onBadImage = options.onBadImage;
    this.#badImagesFile = options.badImagesFile;
    if (this.#badImagesFile !== undefined && fs.existsSync(this.#badImagesFile)) {
      // A resumed run: keep the files an earlier part of it skipped.
      for (const line of fs.readFileSync(this.#badImagesFile, "utf8").split("\n")) {
        const [file, reason] = line.split("\t");
        if (file) this.#bad.set(file, reason ?? "");
      }
    }
    if (this.#streamed !== null) this.#noteBad(this.#streamed.listedBad);
    const init: WorkerInit = { source: spec, configs: this.configs, seed: this.seed };
    for (let w = 0; w < workers; w++) this.#workers.push(this.#spawn(w, init, threads));
    // The workers start on the first batches now, while the caller builds its model.
    this.#fillQueue();
  }

  /** The position of the next batch next() returns (save it to resume). */
  get position(): LoaderPosition {
    return { epoch: this.#epoch, batch: this.#batch };
  }

  /** Cumulative timings since construction (or resetStats). */
  get stats(): LoaderStats {
    return { ...this.#stats };
  }

  /** Streamed image folders: the files skipped so far (listed when opened, or found bad while decoding). */
  get badImages(): BadImage[] {
    return [...this.#bad].map(([file, reason]) => ({ file, reason }));
  }

  resetStats(): void {
    this.#stats = { batches: 0, waitMs: 0, prepareMs: 0 };
  }

  /** Moves to a position; batches prepared ahead are discarded. */
  seek(position: LoaderPosition): void {
    this.#epoch = positiveInt(position.epoch, "position.epoch", 0);
    this.#batch = positiveInt(position.batch, "position.batch", 0);
    this.#normalise();
    this.#jobs.clear();
    this.#fillQueue();
  }

  /** The dataset indices of epoch `epoch`, in the order the loader visits them. */
  epochOrder(epoch: number): Int32Array {
    let order = this.#order.get(epoch);
    if (order === undefined) {
      order = this.shuffle
        ? new Rng(this.seed, SHUFFLE_STREAM, epoch).permutation(this.dataset.count)
        : Int32Array.from({ length: this.dataset.count }, (_, i) => i);
      this.#order.set(epoch, order);
      for (const e of this.#order.keys()) if (e < epoch - 1 || e > epoch + 1) this.#order.delete(e);
    }
    return order;
  }

  /** The dataset indices of batch `batch` of epoch `epoch` (this rank's shard of it). */
  batchIndices(epoch: number, batch: number): Int32Array {
    const order = this.epochOrder(epoch);
    const start = (batch * this.shardCount + this.shardRank) * this.batchSize;
    return order.slice(start, Math.min(start + this.batchSize, order.length));
  }

  /** The next batch (crossing into the next epoch after the last one). */
  async next(): Promise<Batch> {
    const entered = performance.now();
    if (this.#closed) throw new Error("DataLoader: next() after close()");
    if (this.#failure) throw this.#failure;
    const epoch = this.#epoch;
    const batch = this.#batch;
    const job = this.#request(epoch, batch);
    // Keep the workers busy with the batches after this one while we wait and while it trains.
    this.#fillQueue();
    this.#jobs.delete(`${epoch}:${batch}`);
    const prepared = await job.promise;
    if (prepared.bad !== undefined) this.#noteBad(prepared.bad);
    const indices = prepared.indices ?? job.indices;
    const views = prepared.views.map((v, i) => keep(fromTypedArray(v, prepared.shapes[i])));
    this.#recycle(
      prepared.views.map((v) => v.buffer as ArrayBuffer),
      job.worker,
    );
    const labels = this.dataset.labels;
    const labelTensor =
      labels === null
        ? null
        : keep(
            fromTypedArray(
              BigInt64Array.from(indices, (i) => BigInt(labels[i])),
              [indices.length],
            ),
          );
    const next = this.#after({ epoch, batch });
    this.#epoch = next.epoch;
    this.#batch = next.batch;
    const waitMs = performance.now() - entered;
    this.#stats.batches++;
    this.#stats.waitMs += waitMs;
    this.#stats.prepareMs += prepared.prepareMs;
    return {
      views,
      labels: labelTensor,
      indices,
      epoch,
      batch,
      waitMs,
      prepareMs: prepared.prepareMs,
      dispose(): void {
        for (const v of views) v.release();
        labelTensor?.release();
      },
    };
  }

  /** The remaining batches of the current epoch. */
  async *epochBatches(): AsyncGenerator<Batch> {
    const epoch = this.#epoch;
    while (this.#epoch === epoch && !this.#closed) yield await this.next();
  }

  [Symbol.asyncIterator](): AsyncGenerator<Batch> {
    return this.epochBatches();
  }

  /** Stops the workers (batches prepared ahead are dropped). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#jobs.clear();
    const exits = this.#workers.map(
      (w) =>
        new Promise<void>((resolve) => {
          // A worker finishes its current image (streamed folders) or batch first; terminating it
          // inside a native call would abort the process, so the grace period is generous.
          const timer = setTimeout(() => void w.terminate(), CLOSE_GRACE_MS);
          w.once("exit", () => {
            clearTimeout(timer);
            resolve();
          });
          w.ref();
          w.postMessage({ type: "close" } satisfies WorkerRequest);
        }),
    );
    await Promise.all(exits);
    for (const p of this.#pending.values()) p.reject(new Error("DataLoader closed"));
    this.#pending.clear();
    this.#workers = [];
  }

  /** Gives a batch's buffers (copied into tensors) back to the thread that made them, for its next batches. */
  #recycle(buffers: ArrayBuffer[], worker: number | undefined): void {
    if (worker === undefined) {
      recycleBuffers(buffers);
      return;
    }
    const w = this.#workers[worker];
    if (w === undefined || this.#closed) return;
    try {
      w.postMessage({ type: "recycle", buffers } satisfies WorkerRequest, buffers);
    } catch {
      // A worker that has exited: its buffers are simply freed.
    }
  }

  /** Records newly found bad files: tells onBadImage and rewrites badImagesFile. */
  #noteBad(found: readonly BadImage[]): void {
    const fresh = found.filter((b) => !this.#bad.has(b.file));
    if (fresh.length === 0) return;
    for (const b of fresh) {
      this.#bad.set(b.file, b.reason);
      this.#onBadImage?.(b);
    }
    if (this.#badImagesFile !== undefined) {
      const text = this.badImages.map((b) => `${b.file}\t${b.reason.replace(/\s+/g, " ")}\n`).join("");
      const tmp = `${this.#badImagesFile}.tmp-${process.pid}`;
      fs.writeFileSync(tmp, text);
      fs.renameSync(tmp, this.#badImagesFile);
    }
  }

  /** With workers: requests the batch at the current position and the `prefetch` after it (those not yet requested). */
  #fillQueue(): void {
    if (this.#workers.length === 0) return;
    let pos = this.position;
    this.#request(pos.epoch, pos.batch);
    for (let k = 0; k < this.#prefetch; k++) {
      pos = this.#after(pos);
      this.#request(pos.epoch, pos.batch);
    }
  }

  #normalise(): void {
    this.#epoch += Math.floor(this.#batch / this.batchesPerEpoch);
    this.#batch %= this.batchesPerEpoch;
  }

  #after(p: LoaderPosition): LoaderPosition {
    return p.batch + 1 < this.batchesPerEpoch
      ? { epoch: p.epoch, batch: p.batch + 1 }
      : { epoch: p.epoch + 1, batch: 0 };
  }

  #request(epoch: number, batch: number): Job {
    const key = `${epoch}:${batch}`;
    let job = this.#jobs.get(key);
    if (job !== undefined) return job;
    const indices = this.batchIndices(epoch, batch);
    if (this.#workers.length === 0 && this.#streamed !== null) {
      const known = new Set(this.#bad.keys());
      const promise = prepareStreamingBatch(
        this.#streamed,
        this.#augmentations,
        indices,
        this.seed,
        epoch,
        batch,
        known,
      );
      promise.catch(() => {}); // as below: reported when awaited
      job = { promise, indices };
    } else if (this.#workers.length === 0) {
      let result: PreparedBatch;
      try {
        const skip = this.shardRank * this.batchSize;
        result = prepareBatch(this.dataset.images, this.#augmentations, indices, this.seed, epoch, batch, skip);
      } catch (error) {
        job = { promise: Promise.reject(error as Error), indices };
        return job;
      }
      job = { promise: Promise.resolve(result), indices };
    } else {
      const id = this.#nextJobId++;
      const w = this.#jobsSent++ % this.#workers.length;
      const worker = this.#workers[w];
      const promise = new Promise<Prepared>((resolve, reject) => this.#pending.set(id, { resolve, reject, worker: w }));
      promise.catch(() => {}); // a discarded job's failure is reported only if someone awaits it
      worker.ref();
      const msg: WorkerRequest = { type: "job", id, indices, epoch, batch, skip: this.shardRank * this.batchSize };
      worker.postMessage(msg);
      job = { promise, indices, worker: w };
    }
    this.#jobs.set(key, job);
    return job;
  }

  #spawn(index: number, init: WorkerInit, threads: number): Worker {
    const worker = new Worker(path.join(__dirname, "worker.js"), {
      workerData: init,
      env: { ...process.env, LOCO_NUM_THREADS: String(threads) },
    });
    worker.unref();
    worker.on("message", (reply: WorkerReply) => {
      const pending = this.#pending.get(reply.id);
      if (pending === undefined) return;
      this.#pending.delete(reply.id);
      if ([...this.#pending.values()].every((p) => p.worker !== index)) worker.unref();
      if ("error" in reply)
        pending.reject(
          reply.badImage !== undefined
            ? new BadImageError(reply.badImage.file, reply.badImage.reason)
            : new Error(`DataLoader: preparing a batch of ${this.dataset.name} failed in a worker: ${reply.error}`),
        );
      else pending.resolve(reply);
    });
    const fail = (error: Error): void => {
      if (this.#closed) return;
      this.#failure = new Error(`DataLoader: worker ${index} for ${this.dataset.name} stopped: ${error.message}`);
      for (const [id, p] of this.#pending) {
        if (p.worker === index) {
          p.reject(this.#failure);
          this.#pending.delete(id);
        }
      }
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`exited with code ${code}`)));
    return worker;
  }
}
