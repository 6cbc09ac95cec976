// What loco knows about each dataset it can open: native image size, channels, the normalisation
// its evaluation and augmentations use, the split it pretrains on, and where it is installed by
// default. The trainer's option resolution reads these facts; nothing else hard-codes them.
import {
  type NormalizeConfig,
  CIFAR10_NORMALIZE,
  FASHION_MNIST_NORMALIZE,
  IMAGENET_NORMALIZE,
  MNIST_NORMALIZE,
} from "./augment";
import { DATASET_NAMES, type DatasetName } from "./datasets";
import { DEFAULT_FASHION_MNIST_DIR } from "./mnist";

export interface DatasetFacts {
  name: DatasetName;
  /** Image side in pixels; null for an image folder (its images are resized to a chosen size). */
  nativeSize: number | null;
  channels: 1 | 3;
  /** Per-channel normalisation of evaluation images and augmented views. */
  normalize: NormalizeConfig | null;
  /** The split self-supervised pretraining reads (STL-10 adds its unlabelled images). */
  pretrainSplit: string;
  /** Where the dataset is installed on this machine by default; undefined: a folder must be given. */
  defaultDir?: string;
}

export const DATASETS: Readonly<Record<DatasetName, DatasetFacts>> = {
  "fashion-mnist": {
    name: "fashion-mnist",
    nativeSize: 28,
    channels: 1,
    normalize: FASHION_MNIST_NORMALIZE,
    pretrainSplit: "train",
    defaultDir: DEFAULT_FASHION_MNIST_DIR,
  },
  mnist: { name: "mnist", nativeSize: 28, channels: 1, normalize: MNIST_NORMALIZE, pretrainSplit: "train" },
  cifar10: { name: "cifar10", nativeSize: 32, channels: 3, normalize: CIFAR10_NORMALIZE, pretrainSplit: "train" },
  cifar100: { name: "cifar100", nativeSize: 32, channels: 3, normalize: CIFAR10_NORMALIZE, pretrainSplit: "train" },
  stl10: {
    name: "stl10",
    nativeSize: 96,
    channels: 3,
    normalize: IMAGENET_NORMALIZE,
    pretrainSplit: "train+unlabeled",
  },
  folder: { name: "folder", nativeSize: null, channels: 3, normalize: IMAGENET_NORMALIZE, pretrainSplit: "train" },
};

/** The facts of a dataset by name; a clear error for an unknown one. */
export function datasetFacts(name: string): DatasetFacts {
  if (!(DATASET_NAMES as readonly string[]).includes(name)) {
    throw new RangeError(`dataset: expected one of ${DATASET_NAMES.join(", ")}, got ${JSON.stringify(name)}`);
  }
  return DATASETS[name as DatasetName];
}
