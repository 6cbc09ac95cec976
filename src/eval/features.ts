// Frozen-feature extraction for the evaluation protocols (docs/methods.md, "Evaluation as implemented"):
// run an encoder without autograd over labelled batches, keep only the [N, D] features and the
// labels, and free everything else batch by batch so memory stays flat.
import { noGrad } from "../torch/autograd";
import { cat } from "../torch/creation";
import { keep, scope } from "../torch/scope";
import type { Tensor } from "../torch/tensor";
import { Module } from "../nn/module";

/** A labelled batch: NCHW (or already flat) images and int64 (or int32) class indices. */
export interface EvalBatch {
  images: Tensor;
  labels: Tensor;
}

/** Frozen features and their labels. The caller owns both tensors (dispose them). */
export interface FeatureSet {
  /** [N, D] float32. */
  features: Tensor;
  /** [N] int64. */
  labels: Tensor;
}

export interface ExtractOptions {
  /**
   * Dispose each batch after use (default false): its `dispose()` method when it has one (the
   * DataLoader's Batch), else its `images` and `labels`. The batches belong to the caller, so by
   * default nothing of theirs is freed: set this for generators that make fresh tensors per batch
   * (e.g. `yield { images: x.narrow(…), labels: … }`), leave it off for arrays of batches reused
   * across calls. (fromViewBatches disposes the DataLoader's batches by itself.)
   */
  disposeBatches?: boolean;
  /** Stop after this many examples (the last batch is cut). Default: all. */
  limit?: number;
  /**
   * Called after every batch with the examples done so far and the expected total: `total` when
   * given, else `limit`, else undefined (a generator's length is not known in advance).
   */
  onProgress?: (done: number, total: number | undefined) => void;
  /** The number of examples the batches hold, for onProgress (they are not counted in advance). */
  total?: number;
  /**
   * Modules to hold in eval mode during the extraction (each module's previous mode is restored
   * afterwards), e.g. the encoder behind a `forward` function. extractStageFeatures adds the
   * stages themselves when they are Modules.
   */
  module?: Module | readonly Module[];
}

/** Disposes and frees a FeatureSet. */
export function disposeFeatureSet(set: FeatureSet): void {
  set.features.release();
  set.labels.release();
}

/**
 * Runs `fn` with `module` (and every descendant) in evaluation mode and restores each module's
 * previous mode afterwards, even when `fn` throws. A Promise result restores when it settles.
 */
export function withEval<T>(module: Module, fn: () => T): T {
  const modules = module.modules();
  const modes = modules.map((m) => m.training);
  const restore = (): void => modules.forEach((m, i) => (m.training = modes[i]));
  module.eval();
  let result: T;
  try {
    result = fn();
  } catch (error) {
    restore();
    throw error;
  }
  if (result instanceof Promise) return result.finally(restore) as T;
  restore();
  return result;
}

/** Runs `fn` with every module of `modules` in eval mode (withEval, nested). */
export function withEvalAll<T>(modules: readonly Module[], fn: () => T): T {
  if (modules.length === 0) return fn();
  const [first, ...rest] = modules;
  return withEval(first, () => withEvalAll(rest, fn));
}

function modulesOf(option: ExtractOptions["module"], extra: readonly unknown[] = []): Module[] {
  const given = option === undefined ? [] : option instanceof Module ? [option] : [...option];
  return [...given, ...extra.filter((m): m is Module => m instanceof Module)];
}

/** Global average pool of a stage output: [N, C, H, W] → [N, C]; [N, D] is returned as is. */
export function globalAvgPool(h: Tensor): Tensor {
  if (h.ndim === 4) return h.mean([2, 3]);
  if (h.ndim === 2) return h;
  if (h.ndim === 3) return h.mean(2);
  throw new RangeError(`globalAvgPool: expected a 2-D, 3-D or 4-D tensor, got shape [${h.shape.join(", ")}]`);
}

/** The raw-pixel baseline's "encoder": the images flattened to [N, C·H·W] float32. */
export function rawPixelsFeatures(images: Tensor): Tensor {
  const flat = images.flatten(1);
  return flat.dtype === "float32" ? flat : flat.float();
}

/** Something with a forward (a ResNetStage, any Module). */
export interface StageLike {
  forward(x: Tensor): Tensor;
}

function checkStageIndex(stages: readonly StageLike[], stageIndex: number, fn: string): void {
  if (!Number.isInteger(stageIndex) || stageIndex < 0 || stageIndex >= stages.length) {
    throw new RangeError(
      `${fn}: stageIndex must be an integer in [0, ${stages.length - 1}], got ${String(stageIndex)}`,
    );
  }
}

/**
 * Global-average-pooled output of stage `stageIndex` (0-based: 0 is S_1 = stem + layer1 of a
 * ResNet's stages()), computed by running stages 0 … stageIndex in order: [N, C_stage] float32.
 * The intermediate activations are freed. Call it under noGrad / withEval for evaluation (or use
 * stageForward with extractFeatures, which does both).
 */
export function stageFeatures(stages: readonly StageLike[], images: Tensor, stageIndex: number): Tensor {
  checkStageIndex(stages, stageIndex, "stageFeatures");
  return scope(() => {
    let h = images;
    for (let i = 0; i <= stageIndex; i++) h = stages[i].forward(h);
    const pooled = globalAvgPool(h);
    return pooled.dtype === "float32" ? pooled : pooled.float();
  });
}

/** A forward for extractFeatures / evaluateEncoder that reads out stage `stageIndex` (0-based). */
export function stageForward(stages: readonly StageLike[], stageIndex: number): (images: Tensor) => Tensor {
  checkStageIndex(stages, stageIndex, "stageForward");
  return (images) => stageFeatures(stages, images, stageIndex);
}

function asInt64Labels(labels: Tensor, n: number): Tensor {
  if (labels.ndim !== 1 || labels.shape[0] !== n) {
    throw new RangeError(`extractFeatures: labels must have shape [${n}], got [${labels.shape.join(", ")}]`);
  }
  return labels.dtype === "int64" ? labels.clone() : labels.long();
}

function checkFeatures(f: Tensor, n: number, what: string): Tensor {
  if (f.ndim !== 2 || f.shape[0] !== n) {
    throw new RangeError(
      `${what}: the forward must return [N, D] features for N = ${n} images, got shape [${f.shape.join(", ")}] ` +
        "(pool a feature map with globalAvgPool, or use stageForward)",
    );
  }
  return f.dtype === "float32" ? f.contiguous() : f.float();
}

function disposeBatch(batch: EvalBatch): void {
  const d = (batch as { dispose?: unknown }).dispose;
  if (typeof d === "function") {
    (d as () => void).call(batch);
    return;
  }
  batch.images.release();
  batch.labels.release();
}

/** Accumulates kept per-batch outputs and concatenates them at the end. */
class Collector {
  readonly parts: Tensor[][];
  readonly labels: Tensor[] = [];
  count = 0;

  constructor(readonly outputs: number) {
    this.parts = Array.from({ length: outputs }, () => []);
  }

  /** Processes one batch inside the caller's scope; returns false once the limit is reached. */
  add(batch: EvalBatch, forward: (images: Tensor) => Tensor[], limit: number): void {
    let n = batch.images.shape[0];
    let images = batch.images;
    let labels = batch.labels;
    if (labels.ndim !== 1 || labels.shape[0] !== n) {
      throw new RangeError(`extractFeatures: a batch has ${n} images but labels of shape [${labels.shape.join(", ")}]`);
    }
    if (this.count + n > limit) {
      n = limit - this.count;
      images = images.narrow(0, 0, n);
      labels = labels.narrow(0, 0, n);
    }
    if (n === 0) return;
    const outs = noGrad(() => forward(images));
    if (outs.length !== this.outputs)
      throw new Error(`extractFeatures: expected ${this.outputs} outputs, got ${outs.length}`);
    outs.forEach((f, i) => this.parts[i].push(keep(checkFeatures(f, n, "extractFeatures"))));
    this.labels.push(keep(asInt64Labels(labels, n)));
    this.count += n;
  }

  finish(): FeatureSet[] {
    if (this.count === 0) {
      this.dispose();
      throw new Error("extractFeatures: the batches were empty");
    }
    const dims = this.parts.map((p) => p[0].shape[1]);
    this.parts.forEach((p, i) => {
      if (p.some((t) => t.shape[1] !== dims[i])) {
        this.dispose();
        throw new RangeError("extractFeatures: batches gave features of different widths");
      }
    });
    const sets = scope(() => {
      const labels = cat(this.labels);
      return this.parts.map((p, i) => ({ features: cat(p), labels: i === 0 ? labels : labels.clone() }));
    });
    this.dispose();
    for (const s of sets) {
      keep(s.features);
      keep(s.labels);
    }
    return sets;
  }

  dispose(): void {
    for (const p of this.parts) for (const t of p) t.release();
    for (const t of this.labels) t.release();
  }
}

/** Progress reporting of one extraction pass (a no-op without onProgress). */
function progressOf(options: ExtractOptions): (done: number) => void {
  const report = options.onProgress;
  if (report === undefined) return () => {};
  const total = options.total === undefined ? options.limit : Math.min(options.total, options.limit ?? Infinity);
  return (done) => report(done, total);
}

function runSyncBatches(
  forward: (images: Tensor) => Tensor[],
  outputs: number,
  batches: Iterable<EvalBatch>,
  options: ExtractOptions,
): FeatureSet[] {
  const limit = options.limit ?? Infinity;
  const progress = progressOf(options);
  const collector = new Collector(outputs);
  const it = batches[Symbol.iterator]();
  try {
    while (collector.count < limit) {
      // The batch is pulled outside the scope: its tensors (and whatever a generator creates while
      // producing it) belong to the caller; only disposeBatches frees them.
      const r = it.next();
      if (r.done) break;
      try {
        scope(() => collector.add(r.value, forward, limit));
      } finally {
        if (options.disposeBatches) disposeBatch(r.value);
      }
      progress(collector.count);
    }
  } catch (error) {
    collector.dispose();
    it.return?.();
    throw error;
  }
  it.return?.();
  return collector.finish();
}

/** Batches to extract from: an array, a generator, a DataLoader epoch (sync or async). */
export type EvalBatches = Iterable<EvalBatch> | AsyncIterable<EvalBatch>;

function run(
  forward: (images: Tensor) => Tensor[],
  outputs: number,
  batches: EvalBatches,
  options: ExtractOptions,
  stages: readonly unknown[] = [],
): Promise<FeatureSet[]> {
  return withEvalAll(modulesOf(options.module, stages), () => runBatches(forward, outputs, batches, options));
}

async function runBatches(
  forward: (images: Tensor) => Tensor[],
  outputs: number,
  batches: EvalBatches,
  options: ExtractOptions,
): Promise<FeatureSet[]> {
  // Sync batches are consumed without a microtask per batch.
  if (Symbol.iterator in batches) return runSyncBatches(forward, outputs, batches as Iterable<EvalBatch>, options);
  const limit = options.limit ?? Infinity;
  const progress = progressOf(options);
  const collector = new Collector(outputs);
  try {
    for await (const batch of batches) {
      try {
        scope(() => collector.add(batch, forward, limit));
      } finally {
        if (options.disposeBatches) disposeBatch(batch);
      }
      progress(collector.count);
      if (collector.count >= limit) break;
    }
  } catch (error) {
    collector.dispose();
    throw error;
  }
  return collector.finish();
}

/**
 * Runs `forward` under noGrad over every batch (sync or async: arrays, generators, DataLoader
 * epochs) and returns the concatenated features [N, D] (float32) with their labels [N] (int64).
 * Each batch's activations are freed at once (a scope per batch), so only the features
 * accumulate; the caller owns and disposes the result.
 *
 * `forward` is an opaque function, so its module's mode is the caller's: pass it as
 * `options.module` so BatchNorm uses its running statistics (evaluateEncoder does this).
 * `forward` must return [N, D].
 */
export async function extractFeatures(
  forward: (images: Tensor) => Tensor,
  batches: EvalBatches,
  options: ExtractOptions = {},
): Promise<FeatureSet> {
  return (await run((x) => [forward(x)], 1, batches, options))[0];
}

function allStagesForward(stages: readonly StageLike[], which: readonly number[]): (images: Tensor) => Tensor[] {
  const last = Math.max(...which);
  return (images) => {
    const pooled: Tensor[] = [];
    let h = images;
    for (let i = 0; i <= last; i++) {
      h = stages[i].forward(h);
      pooled[i] = globalAvgPool(h);
    }
    return which.map((i) => pooled[i]);
  };
}

/**
 * Pooled features of several stages in one pass over the data (each batch goes through the
 * network once): one FeatureSet per entry of `stageIndices` (0-based; default all stages). Stages
 * that are Modules are held in eval mode meanwhile (their modes restored after).
 */
export async function extractStageFeatures(
  stages: readonly StageLike[],
  batches: EvalBatches,
  stageIndices: readonly number[] = stages.map((_, i) => i),
  options: ExtractOptions = {},
): Promise<FeatureSet[]> {
  stageIndices.forEach((i) => checkStageIndex(stages, i, "extractStageFeatures"));
  return run(allStagesForward(stages, stageIndices), stageIndices.length, batches, options, stages);
}

/** What the DataLoader yields (structurally): views of a batch, its labels, and dispose(). */
export interface ViewBatch {
  views: Tensor[];
  labels: Tensor | null;
  dispose(): void;
}

/**
 * Adapts DataLoader batches (or any `{ views, labels, dispose }`) to EvalBatch: `images` is view
 * `view` (default 0). Each loader batch is disposed as soon as the consumer asks for the next one
 * (or stops early), so memory stays flat without `disposeBatches`; a batch's tensors are valid
 * only until then. For evaluation build the loader with evalTransform(), one view, shuffle: false
 * and dropLast: false, so every example is seen once.
 */
export async function* fromViewBatches(
  batches: AsyncIterable<ViewBatch> | Iterable<ViewBatch>,
  view = 0,
): AsyncGenerator<EvalBatch> {
  for await (const b of batches) {
    try {
      if (b.labels === null)
        throw new Error("fromViewBatches: the batches have no labels (a label-free dataset cannot be evaluated)");
      if (view < 0 || view >= b.views.length)
        throw new RangeError(`fromViewBatches: view ${view} of a batch with ${b.views.length} views`);
      yield { images: b.views[view], labels: b.labels };
    } finally {
      b.dispose();
    }
  }
}
