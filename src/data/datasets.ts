// One entry point for every dataset, driven by a plain config object (what the CLI's config holds).
import { openCifar10, openCifar100 } from "./cifar";
import { type ImageDataset, type SubsetOptions, subset, withoutLabels } from "./dataset";
import { type BadImagePolicy, openImageFolder } from "./folder";
import { openMnist } from "./mnist";
import { type Stl10Split, openStl10 } from "./stl10";
import { openStreamingFolder } from "./stream";

export const DATASET_NAMES = ["fashion-mnist", "mnist", "cifar10", "cifar100", "stl10", "folder"] as const;
export type DatasetName = (typeof DATASET_NAMES)[number];

export interface DatasetSpec {
  name: DatasetName;
  /** The dataset's folder (optional for fashion-mnist: /usr/share/datasets/fashion-mnist). */
  dir?: string;
  /**
   * train / test for all; stl10 adds unlabeled and train+unlabeled; folder: train, val or test (val
   * and test stand in for each other; train on a folder without train/ reads the folder itself), or none.
   */
  split?: string;
  /** Hide the labels (self-supervised pretraining). */
  labelFree?: boolean;
  /** Keep a deterministic random subset. */
  subset?: SubsetOptions;
  /** cifar100: fine (100 classes, default) or coarse (20) labels. */
  labels?: "fine" | "coarse";
  /** folder: output size (required), channels (3 or 1), fit, and what to do with a bad image file. */
  size?: number | [number, number];
  channels?: 1 | 3;
  fit?: "cover" | "fill";
  onBadImage?: BadImagePolicy;
  /**
   * folder: list the files only and decode them as a DataLoader loads them, with the random crop
   * applied at decode time (./stream.ts); memory does not grow with the dataset. Default false:
   * decode every image once, at open, into memory at `size`.
   */
  stream?: boolean;
}

export interface OpenDatasetOptions {
  /** Told what was found where that is worth saying (an image folder's images per class). */
  log?: (message: string) => void;
}

function requireDir(spec: DatasetSpec): string {
  if (typeof spec.dir !== "string" || spec.dir.length === 0)
    throw new TypeError(`dataset ${spec.name}: dir is required (the folder holding its files)`);
  return spec.dir;
}

function trainTest(spec: DatasetSpec): "train" | "test" {
  const split = spec.split ?? "train";
  if (split !== "train" && split !== "test")
    throw new RangeError(`dataset ${spec.name}: split must be "train" or "test", got ${JSON.stringify(split)}`);
  return split;
}

/** Opens (and validates) the dataset a spec describes, then applies labelFree and subset. */
export async function openDataset(spec: DatasetSpec, options: OpenDatasetOptions = {}): Promise<ImageDataset> {
  if (!DATASET_NAMES.includes(spec.name)) {
    throw new RangeError(`dataset: name must be one of ${DATASET_NAMES.join(", ")}, got ${JSON.stringify(spec.name)}`);
  }
  let d: ImageDataset;
  switch (spec.name) {
    case "fashion-mnist":
    case "mnist":
      d = openMnist({
        dir: spec.name === "mnist" ? requireDir(spec) : spec.dir,
        split: trainTest(spec),
        variant: spec.name,
      });
      break;
    case "cifar10":
      d = openCifar10({ dir: requireDir(spec), split: trainTest(spec) });
      break;
    case "cifar100":
      d = openCifar100({ dir: requireDir(spec), split: trainTest(spec), labels: spec.labels });
      break;
    case "stl10":
      d = openStl10({ dir: requireDir(spec), split: (spec.split ?? "train") as Stl10Split });
      break;
    case "folder":
      if (spec.size === undefined) throw new TypeError("dataset folder: size is required (images are resized to it)");
      d = spec.stream
        ? openStreamingFolder({
            dir: requireDir(spec),
            split: spec.split,
            size: spec.size,
            channels: spec.channels,
            onBadImage: spec.onBadImage,
            log: options.log,
          })
        : await openImageFolder({
            dir: requireDir(spec),
            split: spec.split,
            size: spec.size,
            channels: spec.channels,
            fit: spec.fit,
            onBadImage: spec.onBadImage,
            log: options.log,
          });
      break;
  }
  if (spec.subset) d = subset(d, spec.subset);
  if (spec.labelFree && d.labels !== null) d = withoutLabels(d);
  return d;
}
