// An image folder, in any of the layouts torchvision users have: class folders (one sub-folder per
// class, sorted by name, as torchvision's ImageFolder), the ImageNet layout (train/ and val/ or
// test/, each holding the class folders), or a folder of unlabelled images (self-supervised
// pretraining). JPEG, PNG or WebP files are decoded with sharp (libvips), resized to one size and
// held in memory as uint8 (openImageFolder); ./stream.ts decodes them on the fly instead.
//
// Listing follows symbolic links (to files and to class folders), checks every file's size (an
// empty file cannot be an image) and reports broken links: each such file is bad up front and is
// handled by the same policy as a file that fails to decode (stop, or skip and report).
import * as fs from "node:fs";
import * as path from "node:path";
import type { Sharp, SharpOptions } from "sharp";
import { type ImageDataset, MemoryImages, makeDataset, withoutLabels } from "./dataset";

export const IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".webp"];

/** What to do with a file that is not a readable image: stop with its path (default), or skip it and report it. */
export type BadImagePolicy = "stop" | "skip";
export const BAD_IMAGE_POLICIES: readonly BadImagePolicy[] = ["stop", "skip"];

export interface BadImage {
  file: string;
  reason: string;
}

/** A library's (possibly multi-line, repetitive) message as one line. */
export function oneLine(message: string): string {
  const lines = message
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  return [...new Set(lines)].join("; ");
}

/** A bad image under the "stop" policy (a user-facing error: the CLI prints it without a stack). */
export class BadImageError extends Error {
  override name = "BadImageError";
  readonly userFacing = true;
  readonly exitCode = 1;
  constructor(
    readonly file: string,
    readonly reason: string,
  ) {
    super(`${file}: ${reason}; remove or replace it, or skip such files with --on-bad-image skip`);
  }
}

export interface ImageFolderOptions {
  /** The root: class folders, train/ + val/ (or test/) holding class folders, or unlabelled images. */
  dir: string;
  /**
   * A sub-folder of dir to read: "train", "val" or "test" (val and test stand in for each other,
   * as ImageNet's val/ is the usual test set). "train" on a folder with no train/ sub-folder reads
   * dir itself (class folders, or unlabelled images).
   */
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
  /** A file that is not a readable image: stop with an error naming it (default), or skip it and report it. */
  onBadImage?: BadImagePolicy;
  /** Told about each skipped file (default: a warning through `log`, else a process warning). */
  onSkip?: (file: string, reason: string) => void;
  /** Told what was found (e.g. the images of each class). */
  log?: (message: string) => void;
  /** Images decoded at once (default 4). */
  concurrency?: number;
  /** Hide the labels (self-supervised pretraining). */
  labelFree?: boolean;
}

export interface ImageFolderDataset extends ImageDataset {
  /** The folder read (dir, or dir/split). */
  readonly root: string;
  /** The file behind each image, in dataset order. */
  readonly files: readonly string[];
  /** Files that were skipped (onBadImage: "skip"), with the reason. */
  readonly skipped: readonly BadImage[];
  /** Images of each class (empty for an unlabelled folder). */
  readonly classCounts: readonly number[];
}

/** The files of an image folder, found and size-checked, not yet decoded. */
export interface FolderListing {
  root: string;
  /** Empty for an unlabelled folder. */
  classNames: string[];
  /** In dataset order (class by class, files sorted by name); label -1 when unlabelled. */
  files: { file: string; label: number; bytes: number }[];
  /** Files that cannot be images (empty, broken links, unreadable), found while listing. */
  bad: BadImage[];
  classCounts: number[];
}

function listDir(dir: string): fs.Dirent[] {
  try {
    return fs.readdirSync(dir, { withFileTypes: true });
  } catch (error) {
    throw new Error(`${dir}: cannot list image folder (${(error as Error).message})`);
  }
}

const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

const isImageName = (name: string): boolean =>
  !name.startsWith(".") && IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase());

/** What an entry is once symbolic links are followed (null: a broken link or an unreadable entry). */
function follow(dir: string, entry: fs.Dirent): { kind: "file" | "dir" | "other"; bytes: number } | string {
  if (entry.isFile()) return { kind: "file", bytes: -1 };
  if (entry.isDirectory()) return { kind: "dir", bytes: 0 };
  if (!entry.isSymbolicLink()) return { kind: "other", bytes: 0 };
  try {
    const st = fs.statSync(path.join(dir, entry.name));
    return { kind: st.isFile() ? "file" : st.isDirectory() ? "dir" : "other", bytes: st.size };
  } catch (error) {
    return `broken symbolic link (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`;
  }
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** The folder a split reads: dir/split, its val/test stand-in, or dir itself for "train". */
export function folderSplitRoot(dir: string, split: string | undefined): string {
  if (split === undefined) return dir;
  if (isDirectory(path.join(dir, split))) return path.join(dir, split);
  const standIn = split === "test" ? "val" : split === "val" ? "test" : null;
  if (standIn !== null && isDirectory(path.join(dir, standIn))) return path.join(dir, standIn);
  if (split === "train" && !isDirectory(path.join(dir, "val")) && !isDirectory(path.join(dir, "test"))) return dir;
  if (!isDirectory(dir)) throw new Error(`${dir}: cannot list image folder (not a readable directory)`);
  const layout = `the ImageNet layout: ${path.join(dir, "train", "<class>", "*.jpg")} and ${path.join(dir, "val", "<class>", "*.jpg")}`;
  throw new Error(
    split === "test" || split === "val"
      ? `${dir}: has no val/ or test/ folder; evaluation (linear readout, kNN) needs labelled images there, in class folders (${layout}); ` +
          `an unlabelled folder is for pretraining only (loco train: give a labelled one with --readout-data-dir)`
      : `${dir}: has no ${split}/ folder of images or class folders (${layout})`,
  );
}

/** The files of one folder that can be images: image names, sizes checked, links followed. */
function imageFiles(dir: string, bad: BadImage[]): { file: string; bytes: number }[] {
  const out: { file: string; bytes: number }[] = [];
  for (const entry of listDir(dir)) {
    if (!isImageName(entry.name)) continue;
    const file = path.join(dir, entry.name);
    const what = follow(dir, entry);
    if (typeof what === "string") {
      bad.push({ file, reason: what });
      continue;
    }
    if (what.kind !== "file") continue;
    let bytes = what.bytes;
    if (bytes < 0) {
      try {
        bytes = fs.statSync(file).size;
      } catch (error) {
        bad.push({ file, reason: `cannot stat (${(error as Error).message})` });
        continue;
      }
    }
    if (bytes === 0) bad.push({ file, reason: "empty file (0 bytes)" });
    else out.push({ file, bytes });
  }
  return out.sort((a, b) => byName(a.file, b.file));
}

/**
 * Lists an image folder (no decoding): its class folders (links followed) and their images, or its
 * unlabelled images. Errors name the folder; bad files are returned in `bad`, not thrown.
 */
export function listImageFolder(dir: string, split?: string): FolderListing {
  const root = folderSplitRoot(dir, split);
  const entries = listDir(root);
  const bad: BadImage[] = [];
  const classNames = entries
    .filter((e) => !e.name.startsWith(".") && !isImageName(e.name))
    .filter((e) => {
      const what = follow(root, e);
      return typeof what !== "string" && what.kind === "dir";
    })
    .map((e) => e.name)
    .sort(byName);
  const loose = imageFiles(root, bad);
  if (classNames.length > 0 && (loose.length > 0 || bad.length > 0)) {
    const example = loose[0]?.file ?? bad[0].file;
    throw new Error(
      `${root}: holds both class folders (${classNames.slice(0, 3).join(", ")}${classNames.length > 3 ? ", …" : ""}) ` +
        `and ${loose.length + bad.length} images directly (e.g. ${example}): move the images into a class folder, or keep only images for an unlabelled folder`,
    );
  }
  if (classNames.length === 0) {
    if (loose.length === 0 && bad.length === 0) {
      throw new Error(
        `${root}: no class folders and no images (expected one sub-folder of images per class, ` +
          `train/ and val/ folders of them, or ${IMAGE_EXTENSIONS.join(" ")} files for unlabelled pretraining)`,
      );
    }
    return { root, classNames: [], files: loose.map((f) => ({ ...f, label: -1 })), bad, classCounts: [] };
  }
  const files: FolderListing["files"] = [];
  const classCounts: number[] = [];
  classNames.forEach((name, label) => {
    const classDir = path.join(root, name);
    const found = imageFiles(classDir, bad);
    if (found.length === 0 && !bad.some((b) => path.dirname(b.file) === classDir))
      throw new Error(`${classDir}: class folder holds no images (${IMAGE_EXTENSIONS.join(", ")})`);
    classCounts.push(found.length);
    for (const f of found) files.push({ ...f, label });
  });
  bad.sort((a, b) => byName(a.file, b.file));
  return { root, classNames, files, bad, classCounts };
}

/** One line on what a listing found: "1300 images in 100 classes (n01440764 1300, …)". */
export function describeListing(listing: FolderListing, shown = 10): string {
  const n = listing.files.length;
  const badText = listing.bad.length > 0 ? `, ${listing.bad.length} bad` : "";
  if (listing.classNames.length === 0) return `${listing.root}: ${n} unlabelled images${badText}`;
  const counts = listing.classNames.map((c, i) => `${c} ${listing.classCounts[i]}`);
  const more = counts.length > shown ? `, … ${counts.length - shown} more` : "";
  const min = Math.min(...listing.classCounts);
  const max = Math.max(...listing.classCounts);
  return (
    `${listing.root}: ${n} images in ${listing.classNames.length} classes (${counts.slice(0, shown).join(", ")}${more}; ` +
    `${min === max ? `${min} each` : `${min} to ${max} per class`})${badText}`
  );
}

type SharpFactory = (input: string | Buffer, options?: SharpOptions) => Sharp;
let sharpFactory: SharpFactory | undefined;

/** sharp (and libvips) load on first use, so importing loco's data layer does not pay for them. */
export async function loadSharp(): Promise<SharpFactory> {
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

/** Checks the size, channels and fit options shared by the in-memory and streaming folders. */
export function checkFolderOptions(
  what: string,
  options: { size: number | [number, number]; channels?: number; fit?: string; onBadImage?: string },
): { height: number; width: number; channels: 1 | 3; fit: "cover" | "fill"; onBad: BadImagePolicy } {
  const [height, width] = typeof options.size === "number" ? [options.size, options.size] : (options.size ?? []);
  if (![height, width].every((s) => Number.isInteger(s) && s >= 1)) {
    throw new RangeError(
      `${what}: size must be a positive integer or [height, width], got ${JSON.stringify(options.size)}`,
    );
  }
  const channels = options.channels ?? 3;
  if (channels !== 1 && channels !== 3)
    throw new RangeError(`${what}: channels must be 1 or 3, got ${String(channels)}`);
  const fit = options.fit ?? "cover";
  if (fit !== "cover" && fit !== "fill")
    throw new RangeError(`${what}: fit must be "cover" or "fill", got ${String(fit)}`);
  const onBad = options.onBadImage ?? "stop";
  if (onBad !== "stop" && onBad !== "skip")
    throw new RangeError(`${what}: onBadImage must be "stop" or "skip", got ${String(onBad)}`);
  return { height, width, channels, fit, onBad };
}

/** Reads an image folder (validating every file) into memory. */
export async function openImageFolder(options: ImageFolderOptions): Promise<ImageFolderDataset> {
  const { height, width, channels, fit, onBad } = checkFolderOptions("openImageFolder", options);
  const log = options.log;
  const onSkip =
    options.onSkip ??
    (log !== undefined
      ? (file: string, reason: string) => log(`warning: skipped ${file} (${reason})`)
      : (file: string, reason: string) => process.emitWarning(`${file}: skipped (${reason})`, "ImageFolder"));
  const listing = listImageFolder(options.dir, options.split);
  const { root, classNames } = listing;
  if (onBad === "stop" && listing.bad.length > 0) throw new BadImageError(listing.bad[0].file, listing.bad[0].reason);
  const candidates = listing.files;

  const decoded: (Uint8Array | null)[] = new Array(candidates.length).fill(null);
  const skipped: BadImage[] = [...listing.bad];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < candidates.length) {
      const k = next++;
      const { file } = candidates[k];
      try {
        decoded[k] = await decode(file, height, width, channels, fit);
      } catch (error) {
        const reason = oneLine((error as Error).message);
        if (onBad === "stop") throw new BadImageError(file, `cannot decode image (${reason})`);
        skipped.push({ file, reason: `cannot decode image (${reason})` });
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
  const labelled = classNames.length > 0;
  const classCounts = classNames.map((_, c) => kept.filter((k) => k.label === c).length);
  options.log?.(describeListing({ ...listing, files: kept, bad: skipped, classCounts }));
  const base = makeDataset({
    name: `folder:${path.basename(path.resolve(root))}`,
    images,
    labels: labelled ? Int32Array.from(kept, (c) => c.label) : null,
    classNames,
  });
  const dataset = options.labelFree && labelled ? withoutLabels(base) : base;
  return { ...dataset, root, files: kept.map((c) => c.file), skipped, classCounts };
}
