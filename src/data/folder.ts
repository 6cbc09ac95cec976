// An image folder: one sub-folder per class (sorted by name, as torchvision's ImageFolder), JPEG,
// PNG or WebP files decoded with sharp (libvips), resized to one size, and held in memory as uint8.
import * as fs from "node:fs";
import * as path from "node:path";
import type { Sharp, SharpOptions } from "sharp";
import { type ImageDataset, MemoryImages, makeDataset, withoutLabels } from "./dataset";

export const IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".webp"];

export interface ImageFolderOptions {
  /** The root: one sub-folder per class. With `split`, the classes are under root/split. */
  dir: string;
  /** A sub-folder of dir to read (e.g. "train", "val", "test"). */
  split?: string;
  /** Output size: a side length (square) or [height, width]. */
  size: number | [number, number];
  /**
   * How an image is brought to the size: "cover" (default) scales its shorter side to fit and
   * crops the centre (torchvision's Resize + CenterCrop), "fill" stretches it.
   */
  fit?: "cover" | "fill";
  /** 3 (sRGB, default) or 1 (greyscale). */
  channels?: 1 | 3;
  /** A file that cannot be decoded: throw (default), or skip it and report it through onSkip. */
  onBadImage?: "error" | "skip";
  /** Told about each skipped file (default: a process warning). */
  onSkip?: (file: string, reason: string) => void;
  /** Images decoded at once (default 4). */
  concurrency?: number;
  /** Hide the labels (self-supervised pretraining). */
  labelFree?: boolean;
}

export interface ImageFolderDataset extends ImageDataset {
  /** The file behind each image, in dataset order. */
  readonly files: readonly string[];
  /** Files that were skipped (onBadImage: "skip"), with the reason. */
  readonly skipped: readonly { file: string; reason: string }[];
}

function listDir(dir: string): fs.Dirent[] {
  try {
    return fs.readdirSync(dir, { withFileTypes: true });
  } catch (error) {
    throw new Error(`${dir}: cannot list image folder (${(error as Error).message})`);
  }
}

const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

type SharpFactory = (input: string, options?: SharpOptions) => Sharp;
let sharpFactory: SharpFactory | undefined;

/** sharp (and libvips) load on first use, so importing loco's data layer does not pay for them. */
async function loadSharp(): Promise<SharpFactory> {
  if (sharpFactory === undefined) sharpFactory = (await import("sharp")).default as SharpFactory;
  return sharpFactory;
}

/** Decodes one file to C × H × W uint8 (throws with sharp's reason). */
async function decode(
  file: string,
  height: number,
  width: number,
  channels: 1 | 3,
  fit: "cover" | "fill",
): Promise<Uint8Array> {
  const sharp = await loadSharp();
  let pipeline = sharp(file, { failOn: "warning" }).removeAlpha();
  pipeline = channels === 1 ? pipeline.grayscale() : pipeline.toColourspace("srgb");
  const { data, info } = await pipeline.resize({ width, height, fit }).raw().toBuffer({ resolveWithObject: true });
  if (info.width !== width || info.height !== height || info.channels !== channels) {
    throw new Error(
      `decoded to ${info.channels}x${info.height}x${info.width}, expected ${channels}x${height}x${width}`,
    );
  }
  // HWC (sharp's raw layout) to CHW.
  const plane = height * width;
  const out = new Uint8Array(channels * plane);
  for (let p = 0; p < plane; p++) for (let c = 0; c < channels; c++) out[c * plane + p] = data[p * channels + c];
  return out;
}

/** Reads an image folder (validating every file) into memory. */
export async function openImageFolder(options: ImageFolderOptions): Promise<ImageFolderDataset> {
  const root = options.split === undefined ? options.dir : path.join(options.dir, options.split);
  const [height, width] = typeof options.size === "number" ? [options.size, options.size] : options.size;
  if (![height, width].every((s) => Number.isInteger(s) && s >= 1)) {
    throw new RangeError(
      `openImageFolder: size must be a positive integer or [height, width], got ${JSON.stringify(options.size)}`,
    );
  }
  const channels = options.channels ?? 3;
  if (channels !== 1 && channels !== 3)
    throw new RangeError(`openImageFolder: channels must be 1 or 3, got ${String(channels)}`);
  const fit = options.fit ?? "cover";
  if (fit !== "cover" && fit !== "fill")
    throw new RangeError(`openImageFolder: fit must be "cover" or "fill", got ${String(fit)}`);
  const onBad = options.onBadImage ?? "error";
  if (onBad !== "error" && onBad !== "skip")
    throw new RangeError(`openImageFolder: onBadImage must be "error" or "skip", got ${String(onBad)}`);
  const onSkip =
    options.onSkip ??
    ((file: string, reason: string) => process.emitWarning(`${file}: skipped (${reason})`, "ImageFolder"));

  const classNames = listDir(root)
    .filter((e) => e.isDirectory() && !e.name.startsWith("."))
    .map((e) => e.name)
    .sort(byName);
  if (classNames.length === 0)
    throw new Error(`${root}: no class folders (expected one sub-folder of images per class)`);
  const candidates: { file: string; label: number }[] = [];
  classNames.forEach((name, label) => {
    const dir = path.join(root, name);
    const files = listDir(dir)
      .filter(
        (e) => e.isFile() && !e.name.startsWith(".") && IMAGE_EXTENSIONS.includes(path.extname(e.name).toLowerCase()),
      )
      .map((e) => e.name)
      .sort(byName);
    if (files.length === 0) throw new Error(`${dir}: class folder holds no images (${IMAGE_EXTENSIONS.join(", ")})`);
    for (const f of files) candidates.push({ file: path.join(dir, f), label });
  });

  const decoded: (Uint8Array | null)[] = new Array(candidates.length).fill(null);
  const skipped: { file: string; reason: string }[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < candidates.length) {
      const k = next++;
      const { file } = candidates[k];
      try {
        decoded[k] = await decode(file, height, width, channels, fit);
      } catch (error) {
        const reason = (error as Error).message;
        if (onBad === "error") throw new Error(`${file}: cannot decode image (${reason})`);
        skipped.push({ file, reason });
      }
    }
  };
  const concurrency = Math.max(1, Math.min(options.concurrency ?? 4, candidates.length));
  await Promise.all(Array.from({ length: concurrency }, worker));
  skipped.sort((a, b) => byName(a.file, b.file));
  for (const s of skipped) onSkip(s.file, s.reason);

  const kept = candidates.map((c, k) => ({ ...c, pixels: decoded[k] })).filter((c) => c.pixels !== null);
  if (kept.length === 0) throw new Error(`${root}: no image could be decoded (${skipped.length} skipped)`);
  const size = channels * height * width;
  const images = MemoryImages.allocate(kept.length, channels, height, width);
  kept.forEach((c, k) => images.data.set(c.pixels!, k * size));
  const base = makeDataset({
    name: `folder:${path.basename(path.resolve(root))}`,
    images,
    labels: Int32Array.from(kept, (c) => c.label),
    classNames,
  });
  const dataset = options.labelFree ? withoutLabels(base) : base;
  return { ...dataset, files: kept.map((c) => c.file), skipped };
}
