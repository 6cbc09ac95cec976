// Generated image folders for tests, benchmarks and demonstrations: JPEGs of mixed sizes in the
// ImageNet layout (train/ and val/ of class folders), or unlabelled. Each class has its own hue and
// shape (a disc or a bar at a random place and scale, over a noisy background of another hue), so
// the classes can be told apart and augmentations that crop and recolour make the task non-trivial.
import * as fs from "node:fs";
import * as path from "node:path";
import { loadSharp } from "./folder";
import { Rng } from "./rng";

export interface SyntheticFolderOptions {
  /** Classes (default 4); 0 writes unlabelled images straight into dir (or dir/train). */
  classes?: number;
  /** Images per class (or in all, unlabelled) in train/ (default 16). */
  train: number;
  /** Images per class in val/ (default 0: no val/ folder). */
  val?: number;
  /** Width and height each drawn uniformly from this range (default [160, 500], like ImageNet's). */
  sizes?: [number, number];
  /** JPEG quality (default 85). */
  quality?: number;
  seed?: number;
  /** Write train/ + val/ (default true); false writes the train images straight into dir. */
  splits?: boolean;
}

function hueToRgb(h: number): [number, number, number] {
  const k = (n: number): number => {
    const x = (n + h * 6) % 6;
    return Math.round(255 * (1 - Math.max(0, Math.min(1, Math.min(x, 4 - x)))));
  };
  return [k(5), k(3), k(1)];
}

async function writeOne(file: string, cls: number, classes: number, rng: Rng, options: SyntheticFolderOptions) {
  const sharp = await loadSharp();
  const [lo, hi] = options.sizes ?? [160, 500];
  const width = lo + Math.floor(rng.uniform(0, hi - lo + 1));
  const height = lo + Math.floor(rng.uniform(0, hi - lo + 1));
  const hue = classes > 0 ? cls / classes : rng.uniform(0, 1);
  const fg = hueToRgb(hue);
  const bg = hueToRgb((hue + 0.5) % 1).map((v) => v * 0.4 + 60);
  const cx = rng.uniform(0.3, 0.7) * width;
  const cy = rng.uniform(0.3, 0.7) * height;
  const r = rng.uniform(0.15, 0.4) * Math.min(width, height);
  const disc = cls % 2 === 0;
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const inside = disc ? (x - cx) ** 2 + (y - cy) ** 2 < r * r : Math.abs(x - cx) < r && Math.abs(y - cy) < r / 3;
      const noise = ((x * 73 + y * 151 + cls * 29) % 31) - 15;
      const o = (y * width + x) * 3;
      for (let c = 0; c < 3; c++) px[o + c] = Math.max(0, Math.min(255, (inside ? fg[c] : bg[c]) + noise));
    }
  }
  await sharp(px, { raw: { width, height, channels: 3 } })
    .jpeg({ quality: options.quality ?? 85 })
    .toFile(file);
}

/** Writes a generated image folder; returns the number of files written. */
export async function writeSyntheticFolder(dir: string, options: SyntheticFolderOptions): Promise<number> {
  const classes = options.classes ?? 4;
  const rng = new Rng(options.seed ?? 0, 0x5f0);
  const splits: [string, number][] = [[options.splits === false ? "" : "train", options.train]];
  if ((options.val ?? 0) > 0) splits.push(["val", options.val!]);
  let written = 0;
  for (const [split, perClass] of splits) {
    for (let c = 0; c < Math.max(1, classes); c++) {
      const folder = path.join(dir, split, classes > 0 ? `class${String(c).padStart(3, "0")}` : "");
      fs.mkdirSync(folder, { recursive: true });
      for (let i = 0; i < perClass; i++) {
        await writeOne(path.join(folder, `img${String(i).padStart(6, "0")}.jpg`), c, classes, rng, options);
        written++;
      }
    }
  }
  return written;
}
