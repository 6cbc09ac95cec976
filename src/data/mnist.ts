// MNIST and Fashion-MNIST from their IDX files (the default: Debian's dataset-fashion-mnist).
import * as fs from "node:fs";
import * as path from "node:path";
import { readIdx } from "./idx";
import { type ImageDataset, MemoryImages, makeDataset, withoutLabels } from "./dataset";

export const DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist";

export const FASHION_MNIST_CLASSES = [
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
];

export interface ImageSplit {
  /** Images as uint8, N x H x W (one channel). */
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
  height: number;
  width: number;
  channels: number;
  numClasses: number;
}

function findFile(dir: string, stem: string): string {
  for (const name of [stem, `${stem}.gz`]) {
    const p = path.join(dir, name);
    if (fs.existsSync(p)) return p;
  }
  throw new Error(`${dir}: missing ${stem} (or ${stem}.gz)`);
}

/** Loads the train or test split of an MNIST-format dataset, checking images and labels agree. */
export function loadMnistSplit(dir: string, split: "train" | "test", numClasses = 10): ImageSplit {
  const prefix = split === "train" ? "train" : "t10k";
  const imagesPath = findFile(dir, `${prefix}-images-idx3-ubyte`);
  const labelsPath = findFile(dir, `${prefix}-labels-idx1-ubyte`);
  const images = readIdx(imagesPath, 3);
  const labels = readIdx(labelsPath, 1);
  const [count, height, width] = images.shape;
  if (labels.shape[0] !== count) {
    throw new Error(`${labelsPath}: holds ${labels.shape[0]} labels but ${imagesPath} holds ${count} images`);
  }
  for (let i = 0; i < labels.data.length; i++) {
    if (labels.data[i] >= numClasses) {
      throw new Error(
        `${labelsPath}: label ${labels.data[i]} at index ${i} is out of range (expected 0 to ${numClasses - 1})`,
      );
    }
  }
  return { images: images.data, labels: labels.data, count, height, width, channels: 1, numClasses };
}

export const MNIST_CLASSES = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

export interface MnistOptions {
  /** Folder of the four IDX files (gzipped or not). Default: Fashion-MNIST's Debian location. */
  dir?: string;
  split?: "train" | "test";
  /** "fashion-mnist" (default) or "mnist": only the class names differ. */
  variant?: "fashion-mnist" | "mnist";
  /** Hide the labels (self-supervised pretraining). */
  labelFree?: boolean;
}

/** MNIST or Fashion-MNIST as an ImageDataset (1 × 28 × 28, 10 classes), validated on open. */
export function openMnist(options: MnistOptions = {}): ImageDataset {
  const variant = options.variant ?? "fashion-mnist";
  const dir = options.dir ?? (variant === "fashion-mnist" ? DEFAULT_FASHION_MNIST_DIR : undefined);
  if (dir === undefined) throw new Error("openMnist: MNIST has no default folder here: give options.dir");
  const split = options.split ?? "train";
  if (split !== "train" && split !== "test")
    throw new RangeError(`openMnist: split must be "train" or "test", got ${String(split)}`);
  const raw = loadMnistSplit(dir, split, 10);
  const images = MemoryImages.allocate(raw.count, 1, raw.height, raw.width);
  images.data.set(raw.images);
  const dataset = makeDataset({
    name: `${variant}/${split}`,
    images,
    labels: Int32Array.from(raw.labels),
    classNames: variant === "fashion-mnist" ? FASHION_MNIST_CLASSES : MNIST_CLASSES,
  });
  return options.labelFree ? withoutLabels(dataset) : dataset;
}
