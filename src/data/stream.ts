// Streaming image folders: the files are listed (and their sizes checked) when the folder is
// opened; their pixels are decoded only while a DataLoader prepares a batch, with the batch's
// random resized crop applied by libvips as the image is decoded, so a full-size image is never
// kept and memory does not grow with the dataset (the file list aside).
//
// Determinism: view v of position k of batch b of epoch e draws its choices from its own stream,
// Rng(seed, STREAM, e, b, v, k), in torchvision's order (crop box on the image's stored width and
// height, flip, jitter, grayscale, blur: Augmentation.sample for one image). Which images fill a
// batch comes from the loader's epoch order (Rng(seed, SHUFFLE, e)). A batch is therefore a pure
// function of (seed, epoch, batch) and of the files, whatever the number of workers, the order in
// which they finish, or how many images are decoded at once: exact resume holds as in ./loader.ts.
//
// Bad files (not decodable, truncated, unreadable, vanished): with policy "stop" the batch fails
// with a BadImageError naming the file. With "skip", position k takes the next dataset index
// (i + 1, i + 2, … modulo the count) that decodes, with position k's own streams, and the file is
// reported once; since a file's badness does not depend on who finds it, the substitute, and so the
// batch, is still a function of (seed, epoch, batch).
//
// The maths of one view: the crop box (top, left, h, w) is drawn on the stored image (EXIF
// orientation is not applied, as torchvision's PIL loader does not); libvips extracts it and
// resizes it to the output size with a linear kernel that widens when it shrinks (antialiased,
// like PIL's bilinear resize in torchvision's default RandomResizedCrop), then converts it to sRGB
// (or greyscale) uint8. Flip, colour jitter, grayscale, blur and normalisation then run on the
// batch exactly as in ./augment.ts, with the crop set to the whole (already cropped) image. Without
// a crop (evaluation), the image's shorter side is scaled to the output and the centre is kept.
import * as fs from "node:fs";
import { fromTypedArray } from "../torch";
import type { Augmentation, SampleParams } from "./augment";
import { type ImageDataset, ImageFiles, type SourceSpec, makeDataset, withoutLabels } from "./dataset";
import {
  type BadImage,
  type BadImagePolicy,
  BadImageError,
  type ImageFolderDataset,
  checkFolderOptions,
  describeListing,
  listImageFolder,
  loadSharp,
  oneLine,
} from "./folder";
import { type PreparedBatch, augmentInChunks, recycleBuffers, takeBuffer } from "./prepare";
import { Rng } from "./rng";

/** Tag of the per-image augmentation streams (apart from the in-memory loader's and the shuffle's). */
const STREAM_AUGMENT = 0x57e;

/** The random stream of view `view` of position `position` of batch (epoch, batch) of a streamed folder. */
export function streamAugmentRng(seed: number, epoch: number, batch: number, view: number, position: number): Rng {
  return new Rng(seed, STREAM_AUGMENT, epoch, batch, view, position);
}
/** Substitutes tried for one position before a batch fails (skip policy). */
const MAX_SUBSTITUTES = 64;

export interface StreamingFolderOptions {
  /** Class folders, train/ + val/ (or test/) of class folders, or unlabelled images (see openImageFolder). */
  dir: string;
  split?: string;
  /** The size a loader's batches have when its augmentation does not set one (evaluation: resize + centre crop). */
  size: number | [number, number];
  /** 3 (sRGB, default) or 1 (greyscale). */
  channels?: 1 | 3;
  /** A file that is not a readable image: stop with its path (default), or skip and report it. */
  onBadImage?: BadImagePolicy;
  /** Hide the labels (self-supervised pretraining). */
  labelFree?: boolean;
  /** Told what the listing found (images per class, bad files). */
  log?: (message: string) => void;
}

/**
 * Opens an image folder for streaming: lists the files (following symbolic links), checks their
 * sizes, and decodes nothing. Read it through a DataLoader.
 */
export function openStreamingFolder(options: StreamingFolderOptions): ImageFolderDataset {
  const { height, width, channels, onBad } = checkFolderOptions("openStreamingFolder", options);
  const listing = listImageFolder(options.dir, options.split);
  if (onBad === "stop" && listing.bad.length > 0) throw new BadImageError(listing.bad[0].file, listing.bad[0].reason);
  if (listing.files.length === 0)
    throw new Error(`${listing.root}: no readable image (${listing.bad.length} bad files skipped)`);
  options.log?.(describeListing(listing));
  const files = listing.files.map((f) => f.file);
  const images = new ImageFiles({
    kind: "image-files",
    root: listing.root,
    files,
    channels,
    height,
    width,
    onBadImage: onBad,
    listedBad: listing.bad,
  });
  const labelled = listing.classNames.length > 0;
  const base = makeDataset({
    name: `folder:${listing.root.split(/[\\/]/).filter(Boolean).pop() ?? listing.root}`,
    images,
    labels: labelled ? Int32Array.from(listing.files, (f) => f.label) : null,
    classNames: listing.classNames,
  });
  const dataset: ImageDataset = options.labelFree && labelled ? withoutLabels(base) : base;
  return { ...dataset, root: listing.root, files, skipped: listing.bad, classCounts: listing.classCounts };
}

/** A source spec resolved to streamed files: dataset index → file, plus the folder's policy. */
export interface StreamedFiles {
  count: number;
  file: (index: number) => string;
  channels: number;
  onBadImage: BadImagePolicy;
  listedBad: BadImage[];
}

/** The streamed files behind a source spec (a folder, or a subset of one), or null for pixel sources. */
export function streamedFiles(spec: SourceSpec): StreamedFiles | null {
  if (spec.kind === "image-files") {
    return {
      count: spec.files.length,
      file: (i) => spec.files[i],
      channels: spec.channels,
      onBadImage: spec.onBadImage,
      listedBad: spec.listedBad,
    };
  }
  if (spec.kind === "subset") {
    const base = streamedFiles(spec.base);
    if (base === null) return null;
    return { ...base, count: spec.indices.length, file: (i) => base.file(spec.indices[i]) };
  }
  if (spec.kind === "concat" && spec.parts.some((p) => streamedFiles(p) !== null)) {
    throw new Error("concat: a streamed image folder cannot be concatenated (open it with stream: false)");
  }
  return null;
}

function reasonOf(error: unknown): string {
  const e = error as NodeJS.ErrnoException;
  const message = oneLine(e.message);
  return e.code !== undefined && !message.includes(e.code) ? `${e.code}: ${message}` : message;
}

let configured = false;

/**
 * sharp for streaming: libvips' operation cache off (it would keep recently decoded images) and one
 * libvips thread per decode, so that memory stays flat and `workers` is the number of busy cores.
 */
async function streamingSharp(): Promise<Awaited<ReturnType<typeof loadSharp>>> {
  const sharp = await loadSharp();
  if (!configured) {
    const module = (await import("sharp")).default;
    module.cache(false);
    module.concurrency(1);
    configured = true;
  }
  return sharp;
}

/** Decodes one view: the crop box of the stored image (or the centre, without a crop) at height × width, CHW. */
async function decodeView(
  bytes: Buffer,
  crop: SampleParams["crop"] | null,
  height: number,
  width: number,
  channels: number,
  out: Uint8Array,
): Promise<void> {
  const sharp = await loadSharp();
  let p = sharp(bytes, { failOn: "warning" });
  p =
    crop === null
      ? p.resize({ width, height, fit: "cover", kernel: "linear" })
      : p
          .extract({ left: crop.left, top: crop.top, width: crop.width, height: crop.height })
          .resize({ width, height, fit: "fill", kernel: "linear" });
  p = p.removeAlpha();
  p = channels === 1 ? p.grayscale() : p.toColourspace("srgb");
  const { data, info } = await p.raw().toBuffer({ resolveWithObject: true });
  if (info.width !== width || info.height !== height || info.channels !== channels) {
    throw new Error(
      `decoded to ${info.channels}x${info.height}x${info.width}, expected ${channels}x${height}x${width}`,
    );
  }
  const plane = height * width;
  for (let q = 0; q < plane; q++) for (let c = 0; c < channels; c++) out[c * plane + q] = data[q * channels + c];
}

/**
 * Reads one file and decodes every view of it into `outs` (view v's image at its slot), with the
 * choices drawn from `rngs[v]` on the stored width and height. Throws with the reason on any fault.
 */
async function decodeViews(
  file: string,
  augmentations: Augmentation[],
  rngs: Rng[],
  channels: number,
  outs: Uint8Array[],
): Promise<SampleParams[]> {
  const sharp = await streamingSharp();
  let bytes: Buffer;
  try {
    bytes = await fs.promises.readFile(file);
  } catch (error) {
    throw new Error(`cannot read (${reasonOf(error)})`);
  }
  if (bytes.length === 0) throw new Error("empty file (0 bytes)");
  try {
    const meta = await sharp(bytes).metadata();
    if (!(meta.width! > 0 && meta.height! > 0)) throw new Error("no image size in its header");
    const params: SampleParams[] = [];
    for (let v = 0; v < augmentations.length; v++) {
      const aug = augmentations[v];
      const p = aug.sample(rngs[v], 1, meta.height!, meta.width!)[0];
      await decodeView(bytes, aug.config.crop ? p.crop : null, aug.outHeight, aug.outWidth, channels, outs[v]);
      params.push(p);
    }
    return params;
  } catch (error) {
    throw new Error(`cannot decode image (${oneLine((error as Error).message)})`);
  }
}

export interface StreamingBatch extends PreparedBatch {
  /** The dataset index behind each position (a bad file's substitute under "skip"). */
  indices: Int32Array;
  /** Files found bad while preparing this batch (skip policy). */
  bad: BadImage[];
}

/**
 * Prepares batch (epoch, batch) of streamed files: decodes and crops each image per view, then runs
 * the rest of each augmentation on the batch. `knownBad` (files already reported) is updated.
 */
export async function prepareStreamingBatch(
  source: StreamedFiles,
  augmentations: Augmentation[],
  indices: Int32Array,
  seed: number,
  epoch: number,
  batch: number,
  knownBad: Set<string>,
  control: { cancelled?: () => boolean } = {},
): Promise<StreamingBatch> {
  const start = performance.now();
  const n = indices.length;
  const { channels } = source;
  const pixels = augmentations.map((a) => new Uint8Array(takeBuffer(n * channels * a.outHeight * a.outWidth)));
  const params: SampleParams[][] = augmentations.map(() => []);
  const used = new Int32Array(n);
  const bad: BadImage[] = [];
  for (let k = 0; k < n; k++) {
    if (control.cancelled?.()) throw new Error("the loader was closed");
    const slots = augmentations.map((a, v) => {
      const size = channels * a.outHeight * a.outWidth;
      return pixels[v].subarray(k * size, (k + 1) * size);
    });
    let done = false;
    for (let attempt = 0; attempt < MAX_SUBSTITUTES && !done; attempt++) {
      const index = (indices[k] + attempt) % source.count;
      const file = source.file(index);
      if (knownBad.has(file)) continue;
      const rngs = augmentations.map((_, v) => streamAugmentRng(seed, epoch, batch, v, k));
      try {
        const chosen = await decodeViews(file, augmentations, rngs, channels, slots);
        chosen.forEach((p, v) => (params[v][k] = p));
        used[k] = index;
        done = true;
      } catch (error) {
        if (source.onBadImage === "stop") throw new BadImageError(file, reasonOf(error));
        knownBad.add(file);
        bad.push({ file, reason: reasonOf(error) });
      }
    }
    if (!done) {
      throw new Error(
        `image folder: ${MAX_SUBSTITUTES} files in a row from ${source.file(indices[k])} on are bad; is this an image folder?`,
      );
    }
  }
  // The crop is done: what is left acts on the whole decoded image, a few images at a time.
  const views = augmentations.map((aug, v) => {
    const input = { channels, height: aug.outHeight, width: aug.outWidth };
    const size = channels * aug.outHeight * aug.outWidth;
    const whole = { top: 0, left: 0, height: aug.outHeight, width: aug.outWidth };
    return augmentInChunks(
      aug,
      params[v].map((p) => ({ ...p, crop: whole })),
      input,
      (s, count) =>
        fromTypedArray(pixels[v].subarray(s * size, (s + count) * size), [count, channels, input.height, input.width]),
    );
  });
  recycleBuffers(pixels.map((p) => p.buffer as ArrayBuffer));
  const shapes = augmentations.map((a): [number, number, number, number] => [n, channels, a.outHeight, a.outWidth]);
  return { views, shapes, prepareMs: performance.now() - start, indices: used, bad };
}
