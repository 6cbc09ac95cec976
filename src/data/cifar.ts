// CIFAR-10 and CIFAR-100, the binary versions (https://www.cs.toronto.edu/~kriz/cifar.html),
// validated on open.
//
// CIFAR-10 (`cifar-10-batches-bin/`): data_batch_1.bin … data_batch_5.bin and test_batch.bin,
// each a sequence of 3073-byte records: 1 label byte (0–9), then 3072 pixel bytes, the 1024 red
// values of the 32 × 32 image row-major, then green, then blue (CHW).
// CIFAR-100 (`cifar-100-binary/`): train.bin and test.bin, 3074-byte records: the coarse label
// (0–19), the fine label (0–99), then the same 3072 pixel bytes.
import * as fs from "node:fs";
import * as path from "node:path";
import { type ImageDataset, MemoryImages, makeDataset, readFileChecked, withoutLabels } from "./dataset";

export const CIFAR10_CLASSES = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
];

// prettier-ignore
export const CIFAR100_COARSE_CLASSES = [
  "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
  "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
  "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals",
  "trees", "vehicles_1", "vehicles_2",
];

// prettier-ignore
export const CIFAR100_FINE_CLASSES = [
  "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
  "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
  "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
  "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
  "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
  "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
  "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
  "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
  "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman",
  "worm",
];

export const CIFAR_SIZE = 32;
const PIXELS = 3 * CIFAR_SIZE * CIFAR_SIZE;

export interface CifarOptions {
  /** The folder holding the .bin files (cifar-10-batches-bin/ or cifar-100-binary/). */
  dir: string;
  split?: "train" | "test";
  /** Hide the labels (self-supervised pretraining). */
  labelFree?: boolean;
}

export interface Cifar100Options extends CifarOptions {
  /** Which labels to use: the 100 fine classes (default) or the 20 superclasses. */
  labels?: "fine" | "coarse";
}

interface RecordFile {
  path: string;
  bytes: Buffer;
  count: number;
}

function readRecords(file: string, labelBytes: number, labelRanges: number[], labelNames: string[]): RecordFile {
  const bytes = readFileChecked(file, "CIFAR binary file");
  const record = labelBytes + PIXELS;
  if (bytes.length === 0) throw new Error(`${file}: empty file (expected ${record}-byte records)`);
  if (bytes.length % record !== 0) {
    const whole = Math.floor(bytes.length / record);
    throw new Error(
      `${file}: ${bytes.length} bytes is not a whole number of ${record}-byte records ` +
        `(${whole} records and ${bytes.length - whole * record} bytes left over: the file is truncated, or is not this CIFAR format)`,
    );
  }
  const count = bytes.length / record;
  for (let i = 0; i < count; i++) {
    for (let b = 0; b < labelBytes; b++) {
      const v = bytes[i * record + b];
      if (v >= labelRanges[b]) {
        throw new Error(
          `${file}: ${labelNames[b]} label ${v} in record ${i} is out of range (expected 0 to ${labelRanges[b] - 1}; ` +
            `is this the right CIFAR variant?)`,
        );
      }
    }
  }
  return { path: file, bytes, count };
}

function assemble(
  files: RecordFile[],
  labelBytes: number,
  labelIndex: number,
): { images: MemoryImages; labels: Int32Array } {
  const total = files.reduce((a, f) => a + f.count, 0);
  const images = MemoryImages.allocate(total, 3, CIFAR_SIZE, CIFAR_SIZE);
  const labels = new Int32Array(total);
  const record = labelBytes + PIXELS;
  let n = 0;
  for (const f of files) {
    for (let i = 0; i < f.count; i++, n++) {
      const o = i * record;
      labels[n] = f.bytes[o + labelIndex];
      images.data.set(f.bytes.subarray(o + labelBytes, o + record), n * PIXELS);
    }
  }
  return { images, labels };
}

function requireFile(dir: string, name: string, dataset: string): string {
  const p = path.join(dir, name);
  if (!fs.existsSync(p)) throw new Error(`${p}: missing (${dataset} binary version expects ${name} in ${dir})`);
  return p;
}

/** Class names from the dataset's own names file when it is there (else the published list). */
function classNamesFrom(dir: string, file: string, fallback: string[]): string[] {
  const p = path.join(dir, file);
  if (!fs.existsSync(p)) return fallback;
  const names = readFileChecked(p, "class names file")
    .toString("utf8")
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  if (names.length !== fallback.length) {
    throw new Error(`${p}: lists ${names.length} class names, expected ${fallback.length}`);
  }
  return names;
}

function checkSplit(split: unknown, fn: string): "train" | "test" {
  if (split !== "train" && split !== "test")
    throw new RangeError(`${fn}: split must be "train" or "test", got ${String(split)}`);
  return split;
}

/** CIFAR-10 (binary version): 3 × 32 × 32 images, 10 classes; train = data_batch_1..5, test = test_batch. */
export function openCifar10(options: CifarOptions): ImageDataset {
  const split = checkSplit(options.split ?? "train", "openCifar10");
  const names = split === "train" ? [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`) : ["test_batch.bin"];
  const files = names.map((n) => readRecords(requireFile(options.dir, n, "CIFAR-10"), 1, [10], ["class"]));
  const { images, labels } = assemble(files, 1, 0);
  const dataset = makeDataset({
    name: `cifar10/${split}`,
    images,
    labels,
    classNames: classNamesFrom(options.dir, "batches.meta.txt", CIFAR10_CLASSES),
  });
  return options.labelFree ? withoutLabels(dataset) : dataset;
}

/** CIFAR-100 (binary version): 3 × 32 × 32 images, 100 fine classes (or 20 coarse); train.bin / test.bin. */
export function openCifar100(options: Cifar100Options): ImageDataset {
  const split = checkSplit(options.split ?? "train", "openCifar100");
  const which = options.labels ?? "fine";
  if (which !== "fine" && which !== "coarse")
    throw new RangeError(`openCifar100: labels must be "fine" or "coarse", got ${String(which)}`);
  const file = readRecords(requireFile(options.dir, `${split}.bin`, "CIFAR-100"), 2, [20, 100], ["coarse", "fine"]);
  const { images, labels } = assemble([file], 2, which === "fine" ? 1 : 0);
  const dataset = makeDataset({
    name: `cifar100/${split}`,
    images,
    labels,
    classNames:
      which === "fine"
        ? classNamesFrom(options.dir, "fine_label_names.txt", CIFAR100_FINE_CLASSES)
        : classNamesFrom(options.dir, "coarse_label_names.txt", CIFAR100_COARSE_CLASSES),
  });
  return options.labelFree ? withoutLabels(dataset) : dataset;
}

/**
 * Writes a CIFAR binary file: `labels[k]` holds the label byte(s) of image k (one for CIFAR-10,
 * [coarse, fine] for CIFAR-100), `images` N × 3072 CHW bytes. Used by tests and tools.
 */
export function writeCifarBinary(
  file: string,
  labels: readonly (number | readonly number[])[],
  images: Uint8Array,
): void {
  const n = labels.length;
  if (images.length !== n * PIXELS)
    throw new RangeError(`writeCifarBinary: ${n} labels need ${n * PIXELS} pixel bytes, got ${images.length}`);
  const parts: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    parts.push(Buffer.from([labels[i]].flat()));
    parts.push(Buffer.from(images.subarray(i * PIXELS, (i + 1) * PIXELS)));
  }
  fs.writeFileSync(file, Buffer.concat(parts));
}
