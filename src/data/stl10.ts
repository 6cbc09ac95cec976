// STL-10, the binary version (https://cs.stanford.edu/~acoates/stl10/), validated on open.
//
// `stl10_binary/` holds train_X.bin (5000 images), train_y.bin, test_X.bin (8000), test_y.bin and
// unlabeled_X.bin (100000 images, no labels: the pretraining split). An *_X.bin file is a sequence
// of 3 × 96 × 96 = 27648-byte images with each channel plane stored column-major (see
// Stl10FileImages); a *_y.bin file holds one byte per image, the class 1 … 10. Images are read from
// the file on demand (unlabeled_X.bin is 2.7 GB), labels are loaded and converted to 0 … 9.
import * as fs from "node:fs";
import * as path from "node:path";
import {
  type ImageDataset,
  STL10_SIZE,
  Stl10FileImages,
  concat,
  makeDataset,
  readFileChecked,
  withoutLabels,
} from "./dataset";

export const STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"];

const IMAGE_BYTES = 3 * STL10_SIZE * STL10_SIZE;

export type Stl10Split = "train" | "test" | "unlabeled" | "train+unlabeled";

export interface Stl10Options {
  /** The folder holding the .bin files (stl10_binary/). */
  dir: string;
  /** train (5000, labelled), test (8000), unlabeled (100000, label-free), or train+unlabeled (label-free). */
  split?: Stl10Split;
  /** Hide the labels of train / test (unlabeled splits never have them). */
  labelFree?: boolean;
}

function openImages(file: string): Stl10FileImages {
  let size: number;
  try {
    size = fs.statSync(file).size;
  } catch (error) {
    throw new Error(`${file}: cannot read STL-10 image file (${(error as Error).message})`);
  }
  if (size === 0) throw new Error(`${file}: empty file (expected ${IMAGE_BYTES}-byte images)`);
  if (size % IMAGE_BYTES !== 0) {
    const whole = Math.floor(size / IMAGE_BYTES);
    throw new Error(
      `${file}: ${size} bytes is not a whole number of 3x96x96 images of ${IMAGE_BYTES} bytes ` +
        `(${whole} images and ${size - whole * IMAGE_BYTES} bytes left over: the file is truncated, or is not STL-10 binary)`,
    );
  }
  return new Stl10FileImages(file, size / IMAGE_BYTES);
}

function readLabels(file: string, imagesFile: string, count: number): Int32Array {
  const bytes = readFileChecked(file, "STL-10 label file");
  if (bytes.length !== count) {
    throw new Error(
      `${file}: holds ${bytes.length} labels but ${imagesFile} holds ${count} images` +
        (bytes.length < count ? " (one of them is truncated)" : ""),
    );
  }
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const v = bytes[i];
    if (v < 1 || v > 10)
      throw new Error(`${file}: label ${v} at index ${i} is out of range (STL-10 labels are 1 to 10)`);
    labels[i] = v - 1;
  }
  return labels;
}

function classNames(dir: string): string[] {
  const p = path.join(dir, "class_names.txt");
  if (!fs.existsSync(p)) return STL10_CLASSES;
  const names = readFileChecked(p, "class names file")
    .toString("utf8")
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  if (names.length !== 10) throw new Error(`${p}: lists ${names.length} class names, expected 10`);
  return names;
}

function openLabelled(dir: string, split: "train" | "test"): ImageDataset {
  const xFile = path.join(dir, `${split}_X.bin`);
  const yFile = path.join(dir, `${split}_y.bin`);
  const images = openImages(xFile);
  let labels: Int32Array;
  try {
    labels = readLabels(yFile, xFile, images.count);
  } catch (error) {
    images.close();
    throw error;
  }
  return makeDataset({ name: `stl10/${split}`, images, labels, classNames: classNames(dir), labelsFile: yFile });
}

function openUnlabeled(dir: string): ImageDataset {
  const images = openImages(path.join(dir, "unlabeled_X.bin"));
  return makeDataset({ name: "stl10/unlabeled", images, labels: null, classNames: classNames(dir) });
}

/** STL-10 (binary version): 3 × 96 × 96 images, 10 classes, plus the 100k unlabeled split. */
export function openStl10(options: Stl10Options): ImageDataset {
  const split = options.split ?? "train";
  switch (split) {
    case "train":
    case "test": {
      const d = openLabelled(options.dir, split);
      return options.labelFree ? withoutLabels(d) : d;
    }
    case "unlabeled":
      return openUnlabeled(options.dir);
    case "train+unlabeled":
      return concat(
        [withoutLabels(openLabelled(options.dir, "train")), openUnlabeled(options.dir)],
        "stl10/train+unlabeled",
      );
    default:
      throw new RangeError(`openStl10: split must be train, test, unlabeled or train+unlabeled, got ${String(split)}`);
  }
}

/**
 * Writes an STL-10 image file from row-major NCHW uint8 images (N × 3 × 96 × 96), transposing
 * each channel plane to the file's column-major layout. Used by tests and tools.
 */
export function writeStl10Images(file: string, images: Uint8Array): void {
  if (images.length % IMAGE_BYTES !== 0)
    throw new RangeError(`writeStl10Images: ${images.length} bytes is not a whole number of images`);
  const out = new Uint8Array(images.length);
  const s = STL10_SIZE;
  for (let base = 0; base < images.length; base += IMAGE_BYTES) {
    for (let c = 0; c < 3; c++) {
      const p = base + c * s * s;
      for (let y = 0; y < s; y++) for (let x = 0; x < s; x++) out[p + x * s + y] = images[p + y * s + x];
    }
  }
  fs.writeFileSync(file, out);
}

/** Writes an STL-10 label file from 0-based classes (stored as 1 … 10). */
export function writeStl10Labels(file: string, labels: readonly number[]): void {
  fs.writeFileSync(
    file,
    Uint8Array.from(labels, (l) => l + 1),
  );
}
