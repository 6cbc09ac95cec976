// The common dataset interface, the pixel stores behind it, and the generic views over datasets
// (deterministic subset, label-free mode, concatenation).
//
// Pixels live in an ImageSource. Sources are described by a plain, structured-clonable SourceSpec,
// so a loader's worker thread can open the same pixels without copying them: in-memory sources
// keep their bytes in a SharedArrayBuffer (shared with the worker, not copied), file-backed sources
// (STL-10) are reopened by path.
import * as fs from "node:fs";
import { Rng } from "./rng";

/** A set of equally sized uint8 images, read by index into NCHW buffers. */
export interface ImageSource {
  readonly count: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  /**
   * Copies the images at `indices` into `out` (or a new buffer) as NCHW uint8, image k at byte
   * offset k × C × H × W.
   */
  read(indices: ArrayLike<number>, out?: Uint8Array): Uint8Array;
  /** A structured-clonable description that openSource() turns back into an equivalent source. */
  spec(): SourceSpec;
  /** Releases file handles (a no-op for in-memory sources). */
  close(): void;
}

export type SourceSpec =
  | {
      kind: "memory";
      /** NCHW uint8 pixels, image k at offset k × C × H × W. */
      buffer: SharedArrayBuffer;
      count: number;
      channels: number;
      height: number;
      width: number;
    }
  | {
      kind: "stl10-file";
      path: string;
      count: number;
    }
  | {
      kind: "image-files";
      /** The folder the files were listed from (for messages). */
      root: string;
      files: string[];
      channels: number;
      /** The output size: images are decoded, cropped and resized to it as they are loaded. */
      height: number;
      width: number;
      /** What to do with a file that fails to decode: stop with its path, or skip it (./stream.ts). */
      onBadImage: "stop" | "skip";
      /** Files found bad while listing (skipped already; reported by the loader). */
      listedBad: { file: string; reason: string }[];
    }
  | { kind: "subset"; base: SourceSpec; indices: Int32Array }
  | { kind: "concat"; parts: SourceSpec[] };

/** A labelled (or label-free) image dataset: what the loader and evaluators consume. */
export interface ImageDataset {
  /** A short name for logs, e.g. "cifar10/train". */
  readonly name: string;
  readonly count: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  /** Number of classes (known even in label-free mode). */
  readonly numClasses: number;
  readonly classNames: readonly string[];
  /** The class index (0-based) of each image, or null in label-free mode. */
  readonly labels: Int32Array | null;
  /** The pixels. */
  readonly images: ImageSource;
}

function checkIndex(i: number, count: number, what: string): void {
  if (!Number.isInteger(i) || i < 0 || i >= count) {
    throw new RangeError(`${what}: index ${i} is out of range (the dataset holds ${count} images)`);
  }
}

function outBuffer(out: Uint8Array | undefined, n: number, imageBytes: number, what: string): Uint8Array {
  if (out === undefined) return new Uint8Array(n * imageBytes);
  if (out.length < n * imageBytes) {
    throw new RangeError(`${what}: output buffer holds ${out.length} bytes, ${n} images need ${n * imageBytes}`);
  }
  return out;
}

/** Images held in memory (NCHW uint8 in a SharedArrayBuffer). */
export class MemoryImages implements ImageSource {
  readonly data: Uint8Array;

  constructor(
    readonly buffer: SharedArrayBuffer,
    readonly count: number,
    readonly channels: number,
    readonly height: number,
    readonly width: number,
  ) {
    const need = count * channels * height * width;
    if (buffer.byteLength < need)
      throw new RangeError(`MemoryImages: buffer holds ${buffer.byteLength} bytes, need ${need}`);
    this.data = new Uint8Array(buffer, 0, need);
  }

  /** Allocates shared storage for `count` images of C × H × W. */
  static allocate(count: number, channels: number, height: number, width: number): MemoryImages {
    return new MemoryImages(
      new SharedArrayBuffer(Math.max(1, count * channels * height * width)),
      count,
      channels,
      height,
      width,
    );
  }

  read(indices: ArrayLike<number>, out?: Uint8Array): Uint8Array {
    const size = this.channels * this.height * this.width;
    const dst = outBuffer(out, indices.length, size, "MemoryImages.read");
    for (let k = 0; k < indices.length; k++) {
      const i = indices[k];
      checkIndex(i, this.count, "MemoryImages.read");
      dst.set(this.data.subarray(i * size, (i + 1) * size), k * size);
    }
    return dst;
  }

  spec(): SourceSpec {
    return {
      kind: "memory",
      buffer: this.buffer,
      count: this.count,
      channels: this.channels,
      height: this.height,
      width: this.width,
    };
  }

  close(): void {}
}

/** A view of some images of a base source, in the given order. */
export class SubsetImages implements ImageSource {
  readonly channels: number;
  readonly height: number;
  readonly width: number;

  constructor(
    readonly base: ImageSource,
    readonly indices: Int32Array,
  ) {
    for (const i of indices) checkIndex(i, base.count, "subset");
    this.channels = base.channels;
    this.height = base.height;
    this.width = base.width;
  }

  get count(): number {
    return this.indices.length;
  }

  read(indices: ArrayLike<number>, out?: Uint8Array): Uint8Array {
    const mapped = new Int32Array(indices.length);
    for (let k = 0; k < indices.length; k++) {
      checkIndex(indices[k], this.indices.length, "SubsetImages.read");
      mapped[k] = this.indices[indices[k]];
    }
    return this.base.read(mapped, out);
  }

  spec(): SourceSpec {
    return { kind: "subset", base: this.base.spec(), indices: this.indices };
  }

  close(): void {
    this.base.close();
  }
}

/** Several sources of the same image shape, one after another. */
export class ConcatImages implements ImageSource {
  readonly count: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly #starts: number[] = [];

  constructor(readonly parts: ImageSource[]) {
    if (parts.length === 0) throw new RangeError("concat: no datasets given");
    const [first] = parts;
    let start = 0;
    for (const p of parts) {
      if (p.channels !== first.channels || p.height !== first.height || p.width !== first.width) {
        throw new RangeError(
          `concat: image shapes differ (${first.channels}x${first.height}x${first.width} and ${p.channels}x${p.height}x${p.width})`,
        );
      }
      this.#starts.push(start);
      start += p.count;
    }
    this.count = start;
    this.channels = first.channels;
    this.height = first.height;
    this.width = first.width;
  }

  read(indices: ArrayLike<number>, out?: Uint8Array): Uint8Array {
    const size = this.channels * this.height * this.width;
    const dst = outBuffer(out, indices.length, size, "ConcatImages.read");
    for (let k = 0; k < indices.length; k++) {
      const i = indices[k];
      checkIndex(i, this.count, "ConcatImages.read");
      let p = this.parts.length - 1;
      while (this.#starts[p] > i) p--;
      this.parts[p].read([i - this.#starts[p]], dst.subarray(k * size, (k + 1) * size));
    }
    return dst;
  }

  spec(): SourceSpec {
    return { kind: "concat", parts: this.parts.map((p) => p.spec()) };
  }

  close(): void {
    for (const p of this.parts) p.close();
  }
}

// ---- STL-10's file-backed source (its unlabeled split is 2.7 GB: read on demand) ----------------

export const STL10_SIZE = 96;
const STL10_IMAGE_BYTES = 3 * STL10_SIZE * STL10_SIZE;

/**
 * Images of an STL-10 binary file (`*_X.bin`), read on demand. The file stores each image as three
 * 96 × 96 channel planes, each plane column-major (the value at row y, column x is at byte
 * x × 96 + y of the plane), as the dataset's reference reader (and torchvision's
 * `np.transpose(images, (0, 1, 3, 2))`) implies; read() returns the usual row-major NCHW.
 */
export class Stl10FileImages implements ImageSource {
  readonly channels = 3;
  readonly height = STL10_SIZE;
  readonly width = STL10_SIZE;
  #fd: number | null;
  readonly #scratch = new Uint8Array(STL10_IMAGE_BYTES);

  constructor(
    readonly path: string,
    readonly count: number,
  ) {
    this.#fd = fs.openSync(path, "r");
  }

  read(indices: ArrayLike<number>, out?: Uint8Array): Uint8Array {
    if (this.#fd === null) throw new Error(`${this.path}: read after close()`);
    const dst = outBuffer(out, indices.length, STL10_IMAGE_BYTES, "Stl10FileImages.read");
    const plane = STL10_SIZE * STL10_SIZE;
    const src = this.#scratch;
    for (let k = 0; k < indices.length; k++) {
      const i = indices[k];
      checkIndex(i, this.count, `${this.path}`);
      const got = fs.readSync(this.#fd, src, 0, STL10_IMAGE_BYTES, i * STL10_IMAGE_BYTES);
      if (got !== STL10_IMAGE_BYTES)
        throw new Error(
          `${this.path}: short read at image ${i} (${got} of ${STL10_IMAGE_BYTES} bytes; was the file truncated?)`,
        );
      const base = k * STL10_IMAGE_BYTES;
      for (let c = 0; c < 3; c++) {
        const p = c * plane;
        for (let x = 0; x < STL10_SIZE; x++) {
          const col = p + x * STL10_SIZE;
          for (let y = 0; y < STL10_SIZE; y++) dst[base + p + y * STL10_SIZE + x] = src[col + y];
        }
      }
    }
    return dst;
  }

  spec(): SourceSpec {
    return { kind: "stl10-file", path: this.path, count: this.count };
  }

  close(): void {
    if (this.#fd !== null) fs.closeSync(this.#fd);
    this.#fd = null;
  }
}

// ---- streamed image files (./stream.ts decodes them) ------------------------------------------------

/**
 * The files of a streamed image folder. Their pixels exist only while a loader prepares a batch:
 * it decodes each image with the batch's random crop (./stream.ts), so read() is refused.
 */
export class ImageFiles implements ImageSource {
  constructor(readonly description: Extract<SourceSpec, { kind: "image-files" }>) {}

  get count(): number {
    return this.description.files.length;
  }
  get channels(): number {
    return this.description.channels;
  }
  get height(): number {
    return this.description.height;
  }
  get width(): number {
    return this.description.width;
  }

  read(): Uint8Array {
    throw new Error(
      `${this.description.root}: a streamed image folder is read through a DataLoader, which decodes and crops ` +
        `each image as it loads it; open the folder with stream: false to hold decoded images in memory`,
    );
  }

  spec(): SourceSpec {
    return this.description;
  }

  close(): void {}
}

/** Opens the source a SourceSpec describes (used by loader workers). */
export function openSource(spec: SourceSpec): ImageSource {
  switch (spec.kind) {
    case "memory":
      return new MemoryImages(spec.buffer, spec.count, spec.channels, spec.height, spec.width);
    case "stl10-file":
      return new Stl10FileImages(spec.path, spec.count);
    case "image-files":
      return new ImageFiles(spec);
    case "subset":
      return new SubsetImages(openSource(spec.base), spec.indices);
    case "concat":
      return new ConcatImages(spec.parts.map(openSource));
  }
}

// ---- datasets from sources ----------------------------------------------------------------------

/** Builds an ImageDataset, checking labels against the class count. */
export function makeDataset(options: {
  name: string;
  images: ImageSource;
  labels: Int32Array | null;
  classNames: readonly string[];
  /** Names the file the labels came from in errors. */
  labelsFile?: string;
}): ImageDataset {
  const { images, labels, classNames } = options;
  if (labels !== null) {
    const where = options.labelsFile ?? options.name;
    if (labels.length !== images.count) {
      throw new Error(`${where}: holds ${labels.length} labels for ${images.count} images`);
    }
    for (let i = 0; i < labels.length; i++) {
      if (labels[i] < 0 || labels[i] >= classNames.length) {
        throw new Error(
          `${where}: label ${labels[i]} at index ${i} is out of range (expected 0 to ${classNames.length - 1})`,
        );
      }
    }
  }
  return {
    name: options.name,
    count: images.count,
    channels: images.channels,
    height: images.height,
    width: images.width,
    numClasses: classNames.length,
    classNames,
    labels,
    images,
  };
}

/** The same images without labels (for self-supervised pretraining). */
export function withoutLabels(dataset: ImageDataset): ImageDataset {
  return {
    ...dataset,
    name: dataset.name.endsWith("[unlabeled]") ? dataset.name : `${dataset.name}[unlabeled]`,
    labels: null,
  };
}

export interface SubsetOptions {
  /** How many images to keep. */
  count: number;
  /** Seed of the choice (default 0): the same seed picks the same images. */
  seed?: number;
  /** Take count / numClasses images of each class (needs labels; the remainder goes to the first classes). */
  balanced?: boolean;
}

/**
 * A deterministic random subset: the same (dataset, count, seed, balanced) always gives the same
 * images, kept in their original order.
 */
export function subset(dataset: ImageDataset, options: SubsetOptions): ImageDataset {
  const { count } = options;
  if (!Number.isInteger(count) || count < 1 || count > dataset.count) {
    throw new RangeError(`subset: count must be an integer in [1, ${dataset.count}] for ${dataset.name}, got ${count}`);
  }
  const rng = new Rng(options.seed ?? 0, 0x5b5e7);
  let chosen: Int32Array;
  if (options.balanced) {
    const labels = dataset.labels;
    if (labels === null) throw new Error(`subset: balanced needs labels, and ${dataset.name} is label-free`);
    const byClass: number[][] = Array.from({ length: dataset.numClasses }, () => []);
    for (let i = 0; i < labels.length; i++) byClass[labels[i]].push(i);
    const k = dataset.numClasses;
    const picks: number[] = [];
    for (let c = 0; c < k; c++) {
      const want = Math.floor(count / k) + (c < count % k ? 1 : 0);
      if (want > byClass[c].length) {
        throw new RangeError(
          `subset: a balanced subset of ${count} needs ${want} images of class ${c} (${dataset.classNames[c]}), ${dataset.name} has ${byClass[c].length}`,
        );
      }
      const members = Int32Array.from(byClass[c]);
      rng.shuffle(members);
      for (let j = 0; j < want; j++) picks.push(members[j]);
    }
    chosen = Int32Array.from(picks);
  } else {
    chosen = rng.permutation(dataset.count).subarray(0, count);
  }
  chosen = Int32Array.from(chosen).sort();
  const labels = dataset.labels === null ? null : Int32Array.from(chosen, (i) => dataset.labels![i]);
  return {
    ...dataset,
    name: `${dataset.name}[subset ${count}${options.balanced ? " balanced" : ""} seed ${options.seed ?? 0}]`,
    count,
    labels,
    images: new SubsetImages(dataset.images, chosen),
  };
}

/** Datasets with the same image shape and classes, one after another (labels kept only if all have them). */
export function concat(datasets: ImageDataset[], name?: string): ImageDataset {
  if (datasets.length === 0) throw new RangeError("concat: no datasets given");
  const images = new ConcatImages(datasets.map((d) => d.images));
  const allLabelled = datasets.every((d) => d.labels !== null);
  let labels: Int32Array | null = null;
  if (allLabelled) {
    labels = new Int32Array(images.count);
    let o = 0;
    for (const d of datasets) {
      labels.set(d.labels!, o);
      o += d.count;
    }
  }
  return {
    name: name ?? datasets.map((d) => d.name).join("+"),
    count: images.count,
    channels: images.channels,
    height: images.height,
    width: images.width,
    numClasses: datasets[0].numClasses,
    classNames: datasets[0].classNames,
    labels,
    images,
  };
}

/** Reads a whole file, with an error naming it. */
export function readFileChecked(path: string, what: string): Buffer {
  try {
    return fs.readFileSync(path);
  } catch (error) {
    throw new Error(`${path}: cannot read ${what} (${(error as Error).message})`);
  }
}
