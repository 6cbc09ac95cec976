// Streaming image folders (src/data/stream.ts) on folders written here: the random resized crop is
// applied at decode time (checked pixel by pixel on an image whose colours encode their
// coordinates), batches are a function of (seed, epoch, batch) whatever the number of workers and
// across a resume, subsets and labels follow, and each kind of bad file (truncated JPEG, zero-byte
// PNG, a text file named .jpg, an unreadable file) is reported by path under both policies.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import {
  type AugmentConfig,
  Augmentation,
  type Batch,
  DataLoader,
  evalTransform,
  openDataset,
  openStreamingFolder,
  simclrImagenet,
  streamAugmentRng,
  subset,
  writeSyntheticFolder,
} from "../src/data";

let root: string;
let folder: string;
before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "loco-stream-"));
  folder = path.join(root, "synthetic");
  await writeSyntheticFolder(folder, { classes: 3, train: 4, val: 2, sizes: [40, 90], seed: 1 });
});
after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

const snapshot = (b: Batch) => ({
  indices: Array.from(b.indices),
  views: b.views.map((v) => Array.from(v.data() as Float32Array)),
  labels: b.labels ? b.labels.toArray() : null,
});

async function take(loader: DataLoader, n: number): Promise<ReturnType<typeof snapshot>[]> {
  const out = [];
  try {
    for (let i = 0; i < n; i++) {
      const b = await loader.next();
      out.push(snapshot(b));
      b.dispose();
    }
  } finally {
    await loader.close();
  }
  return out;
}

describe("streaming image folder", () => {
  test("lists the files, decodes nothing, and refuses direct reads", () => {
    const ds = openStreamingFolder({ dir: folder, split: "train", size: 24 });
    assert.equal(ds.count, 12);
    assert.deepEqual(ds.classCounts, [4, 4, 4]);
    assert.deepEqual([ds.channels, ds.height, ds.width], [3, 24, 24]);
    assert.deepEqual(Array.from(ds.labels!.slice(0, 5)), [0, 0, 0, 0, 1]);
    assert.throws(() => ds.images.read([0]), /read through a DataLoader/);
    assert.equal(openStreamingFolder({ dir: folder, split: "test", size: 24 }).count, 6, "val/ is the test split");
  });

  test("the random resized crop is applied when the image is decoded", async () => {
    // R = x, G = y of the source pixel (200 × 120, so that crops shrink and enlarge).
    const d = path.join(root, "coords");
    fs.mkdirSync(d, { recursive: true });
    const [w, h] = [200, 120];
    const px = Buffer.alloc(w * h * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) px.set([x, y, 128], (y * w + x) * 3);
    await sharp(px, { raw: { width: w, height: h, channels: 3 } })
      .png()
      .toFile(path.join(d, "a.png"));
    const crop: AugmentConfig = { size: 32, crop: { scale: [0.08, 1] }, hflip: 0.5 };
    const ds = openStreamingFolder({ dir: d, size: 32 });
    const loader = new DataLoader(ds, { batchSize: 1, augment: crop, views: 2, seed: 5, workers: 0 });
    const [b] = await take(loader, 1);
    const aug = new Augmentation(crop);
    for (let v = 0; v < 2; v++) {
      // The contract: view v of position 0 of batch (0, 0) draws from this stream, on the stored size.
      const p = aug.sample(streamAugmentRng(5, 0, 0, v, 0), 1, h, w)[0];
      const view = b.views[v];
      const plane = 32 * 32;
      for (const u of [0, 7, 16, 31]) {
        const sx = p.crop.left + ((u + 0.5) * p.crop.width) / 32 - 0.5;
        const expectX = Math.min(Math.max(sx, p.crop.left), p.crop.left + p.crop.width - 1);
        const col = p.flip ? 31 - u : u;
        const got = view[0 * plane + 16 * 32 + col] * 255;
        // Antialiased shrinking averages neighbours: within a pixel and a half of the crop's column.
        assert.ok(Math.abs(got - expectX) <= 1.5 + p.crop.width / 64, `view ${v} column ${u}: ${got} vs ${expectX}`);
      }
      const sy = p.crop.top + (16.5 * p.crop.height) / 32 - 0.5;
      assert.ok(Math.abs(view[plane + 16 * 32 + 16] * 255 - sy) <= 1.5 + p.crop.height / 64, `view ${v} row`);
    }
  });

  test("batches depend on seed, epoch and batch only: 0, 1 and 2 workers, and a resume, agree", async () => {
    const ds = openStreamingFolder({ dir: folder, split: "train", size: 24, labelFree: true });
    const augment = simclrImagenet(24);
    const make = (workers: number, start?: { epoch: number; batch: number }) =>
      new DataLoader(ds, { batchSize: 4, augment, seed: 9, workers, start });
    const inline = await take(make(0), 5);
    assert.equal(inline[0].views.length, 2);
    assert.equal(inline[0].views[0].length, 4 * 3 * 24 * 24);
    assert.equal(inline[0].labels, null);
    assert.notDeepEqual(inline[0].views[0], inline[0].views[1], "two different views");
    assert.deepEqual(await take(make(1), 5), inline, "1 worker = inline");
    assert.deepEqual(await take(make(2), 5), inline, "2 workers = inline");
    // Batch 4 is epoch 1's batch 1 (3 batches per epoch): a loader started there gives the same batch.
    assert.deepEqual((await take(make(2, { epoch: 1, batch: 1 }), 1))[0], inline[4]);
  });

  test("subsets and labels; evaluation without a crop resizes and keeps the centre", async () => {
    const ds = await openDataset({ name: "folder", dir: folder, split: "train", size: 20, stream: true });
    const small = subset(ds, { count: 6, seed: 2, balanced: true });
    const loader = new DataLoader(small, { batchSize: 6, augment: evalTransform(20), views: 1, shuffle: false });
    const [b] = await take(loader, 1);
    assert.deepEqual(b.labels, [0, 0, 1, 1, 2, 2]);
    assert.equal(b.views[0].length, 6 * 3 * 20 * 20);
    // Class 0 is red-ish in the middle of most images; at least it is a valid [0, 1] image.
    assert.ok(b.views[0].every((x) => x >= 0 && x <= 1));
  });
});

describe("streaming image folder: bad files", () => {
  let d: string;
  const bad: Record<string, string> = {};
  before(async () => {
    d = path.join(root, "bad");
    await writeSyntheticFolder(d, { classes: 2, train: 6, sizes: [40, 60], seed: 3 });
    const cls = path.join(d, "train", "class000");
    bad.truncated = path.join(cls, "truncated.jpg");
    fs.writeFileSync(bad.truncated, fs.readFileSync(path.join(cls, "img000000.jpg")).subarray(0, 300));
    bad.empty = path.join(cls, "empty.png");
    fs.writeFileSync(bad.empty, "");
    bad.text = path.join(d, "train", "class001", "notes.jpg");
    fs.writeFileSync(bad.text, "this is a text file, not a JPEG\n");
    // Unreadable: chmod 000 stops other users; root reads anyway, so there the file is a link to
    // a directory-less path, the same EACCES-or-ENOENT failure at read time.
    bad.unreadable = path.join(d, "train", "class001", "locked.jpg");
    fs.copyFileSync(path.join(cls, "img000001.jpg"), bad.unreadable);
    fs.chmodSync(bad.unreadable, 0);
  });

  /** Makes the unreadable file unreadable for whoever runs the test (root ignores chmod 000). */
  function lockForRoot(): void {
    if (process.getuid?.() === 0) {
      fs.rmSync(bad.unreadable);
      fs.symlinkSync(path.join(d, "missing", "target.jpg"), bad.unreadable);
    }
  }

  test("stop: a bad file found when listing or decoding stops with its path", async () => {
    // Listing finds the empty file first.
    assert.throws(
      () => openStreamingFolder({ dir: d, split: "train", size: 16 }),
      (e: Error) => e.message.startsWith(`${bad.empty}: empty file (0 bytes)`),
    );
    // Without it, decoding meets the others; each one stops a run that reaches it, naming it.
    fs.renameSync(bad.empty, `${bad.empty}.aside`);
    try {
      const ds = openStreamingFolder({ dir: d, split: "train", size: 16 });
      const met = new Set<string>();
      for (const workers of [0, 1]) {
        const loader = new DataLoader(ds, { batchSize: 1, augment: simclrImagenet(16), shuffle: false, workers });
        try {
          for (let i = 0; i < ds.count; i++) {
            try {
              (await loader.next()).dispose();
            } catch (error) {
              const e = error as Error & { file?: string };
              assert.equal(e.name, "BadImageError");
              assert.match(e.message, /^\S+: (cannot decode image|cannot read) \(.*--on-bad-image skip$/);
              assert.ok(e.message.startsWith(`${e.file}: `), e.message);
              met.add(e.file!);
              loader.seek({ epoch: 0, batch: i + 1 });
            }
          }
        } finally {
          await loader.close();
        }
      }
      const expected = [bad.truncated, bad.text];
      if (process.getuid?.() !== 0) expected.push(bad.unreadable);
      assert.deepEqual([...met].sort(), expected.sort());
    } finally {
      fs.renameSync(`${bad.empty}.aside`, bad.empty);
    }
  });

  test("skip: every bad file is reported once, listed in a file, and replaced the same way by any worker count", async () => {
    lockForRoot();
    const ds = openStreamingFolder({ dir: d, split: "train", size: 16, onBadImage: "skip" });
    assert.equal(ds.count, 14, "12 images, the text file, the truncated and the unreadable one; the empty one is out");
    const runs = [];
    for (const workers of [0, 2]) {
      const listFile = path.join(root, `bad-${workers}.txt`);
      const told: string[] = [];
      const loader = new DataLoader(ds, {
        batchSize: 7,
        augment: simclrImagenet(16),
        seed: 1,
        workers,
        onBadImage: (b) => told.push(b.file),
        badImagesFile: listFile,
      });
      const batches = await take(loader, 4);
      const all = [bad.truncated, bad.empty, bad.text, bad.unreadable].sort();
      assert.deepEqual([...told].sort(), all, `${workers} workers: each bad file told once`);
      assert.deepEqual(loader.badImages.map((b) => b.file).sort(), all);
      const listed = fs
        .readFileSync(listFile, "utf8")
        .trim()
        .split("\n")
        .map((l) => l.split("\t")[0]);
      assert.deepEqual(listed.sort(), all);
      for (const b of batches) {
        assert.equal(b.indices.length, 7, "full batches");
        for (const i of b.indices) assert.ok(!all.includes(ds.files[i]), "a bad file never reaches a batch");
      }
      runs.push(batches);
    }
    assert.deepEqual(runs[0], runs[1], "substitutes are the same with 0 and 2 workers");
  });
});
