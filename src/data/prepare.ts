// Preparing one batch: read the images, augment each view with the batch's own random stream.
// Shared by the loader's worker threads and its inline mode, so both produce the same numbers.
import { fromTypedArray, scope } from "../torch";
import { Augmentation } from "./augment";
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
  const views = scope(() => {
    const images = fromTypedArray(pixels, [n, channels, height, width]);
    return augmentations.map((aug, v) => {
      const { output } = aug.run(images, augmentRng(seed, epoch, batch, v), skip);
      return output.data() as Float32Array;
    });
  });
  const shapes = augmentations.map((a): [number, number, number, number] => [n, channels, a.outHeight, a.outWidth]);
  return { views, shapes, prepareMs: performance.now() - start };
}
