// Preparing one batch: read the images, augment each view with the batch's own random stream.
// Shared by the loader's worker threads and its inline mode, so both produce the same numbers.
//
// Memory: Augmentation.apply keeps every intermediate tensor of a call until it returns (about 40
// image-sized float tensors with SimCLR's ImageNet preset: jitter steps, hue in HSV, blur), and the
// allocator caches what was freed for reuse. Applied to a whole batch of 64 images at 224 px that
// was 1.3 GB of tensors at once and a 2 GB cache held for good; applied a few images at a time
// (augmentInChunks) it is a chunk's worth. Every op acts on each image alone: the same result.
import { type Tensor, fromTypedArray, scope } from "../torch";
import type { Augmentation, SampleParams } from "./augment";
import type { ImageSource } from "./dataset";
import { Rng } from "./rng";

/** Tag mixed into the augmentation streams' seeds (keeps them apart from shuffling streams). */
const AUGMENT_STREAM = 0xa06;

/** The random stream of view `view` of batch (epoch, batch): a pure function of its position. */
export function augmentRng(seed: number, epoch: number, batch: number, view: number): Rng {
  return new Rng(seed, AUGMENT_STREAM, epoch, batch, view);
}

export interface PreparedBatch {
  /** One float32 NCHW array per view. */
  views: Float32Array[];
  /** [n, C, H, W] of each view. */
  shapes: [number, number, number, number][];
  /** Milliseconds spent reading and augmenting. */
  prepareMs: number;
}

// Buffers: a batch's float32 views (and a streamed batch's decoded pixels) are megabytes each, made
// on a worker thread and, once the loader has copied them into tensors, freed on the main thread at
// its next garbage collection. Left to glibc, that pattern fragments the worker's malloc arena (its
// mmap threshold rises to the size of the first such buffer freed, so later ones come from the
// arena): resident memory crept up ~100 MiB over 40 batches at 96 px. The loader gives each
// batch's buffers back to the thread that made them (recycleBuffers), which reuses them (takeBuffer).
const pool = new Map<number, ArrayBuffer[]>();
let pooledBytes = 0;
/** At most this many bytes kept for reuse per thread (a few batches' views at 224 px). */
const POOL_BYTES = 256 * 2 ** 20;

/** A buffer of `bytes` bytes, reused if one was given back (its contents are stale: overwrite all of it). */
export function takeBuffer(bytes: number): ArrayBuffer {
  const reused = pool.get(bytes)?.pop();
  if (reused === undefined) return new ArrayBuffer(bytes);
  pooledBytes -= bytes;
  return reused;
}

/** Gives buffers back for takeBuffer on this thread (they must no longer be used; detached ones are ignored). */
export function recycleBuffers(buffers: ArrayBuffer[]): void {
  for (const b of buffers) {
    if (b.byteLength === 0 || pooledBytes + b.byteLength > POOL_BYTES) continue;
    const list = pool.get(b.byteLength) ?? [];
    pool.set(b.byteLength, list);
    list.push(b);
    pooledBytes += b.byteLength;
  }
}

/** Floats per chunk of images augmented at once (1 MiB of float32 at the larger of input and output size). */
const CHUNK_FLOATS = 2 ** 18;

/** Images per chunk for images of `channels` × `inputPixels` augmented to `outputPixels` per channel. */
export function augmentChunkImages(channels: number, inputPixels: number, outputPixels: number): number {
  return Math.max(1, Math.floor(CHUNK_FLOATS / (channels * Math.max(inputPixels, outputPixels))));
}

/**
 * Applies `params` (one set per image) to a batch of `channels` × `height` × `width` images, a chunk
 * of images at a time, and returns the float32 NCHW output. `images(start, count)` gives images
 * [start, start + count) as a tensor (made inside the chunk's scope and freed with it). Chunks
 * hold at most `chunkImages` images (default augmentChunkImages: about 1 MiB of floats per tensor).
 */
export function augmentInChunks(
  aug: Augmentation,
  params: SampleParams[],
  input: { channels: number; height: number; width: number },
  images: (start: number, count: number) => Tensor,
  chunkImages = augmentChunkImages(input.channels, input.height * input.width, aug.outHeight * aug.outWidth),
): Float32Array {
  const n = params.length;
  const size = input.channels * aug.outHeight * aug.outWidth;
  const out = new Float32Array(takeBuffer(n * size * 4));
  // Chunks of (nearly) equal size: fewer tensor sizes for the allocator to cache.
  const per = Math.ceil(n / Math.max(1, Math.ceil(n / chunkImages)));
  for (let start = 0; start < n; start += per) {
    const count = Math.min(per, n - start);
    scope(() => {
      const result = aug.apply(images(start, count), params.slice(start, start + count));
      out.set(result.data() as Float32Array, start * size);
    });
  }
  return out;
}

/**
 * Reads `indices` from `source` and augments them once per view. `skip`: images of the batch that
 * come before these (a rank's shard of a global batch; see Augmentation.run).
 */
export function prepareBatch(
  source: ImageSource,
  augmentations: Augmentation[],
  indices: Int32Array,
  seed: number,
  epoch: number,
  batch: number,
  skip = 0,
): PreparedBatch {
  const start = performance.now();
  const n = indices.length;
  const { channels, height, width } = source;
  const pixels = source.read(indices);
  const size = channels * height * width;
  const chunk = (s: number, count: number): Tensor =>
    fromTypedArray(pixels.subarray(s * size, (s + count) * size), [count, channels, height, width]);
  // As Augmentation.run: the choices of the whole batch (after `skip` images) from the view's stream.
  const views = augmentations.map((aug, v) =>
    augmentInChunks(
      aug,
      aug.sample(augmentRng(seed, epoch, batch, v), skip + n, height, width).slice(skip),
      source,
      chunk,
    ),
  );
  const shapes = augmentations.map((a): [number, number, number, number] => [n, channels, a.outHeight, a.outWidth]);
  return { views, shapes, prepareMs: performance.now() - start };
}
