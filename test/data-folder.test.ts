// Image folder layouts, written here: class folders, the ImageNet layout (train/ + val/, or
// test/), unlabelled folders, symbolic links to images and to class folders (followed, counted per
// class), and the layouts that must be refused with an error naming the folder.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { describeListing, folderSplitRoot, listImageFolder, openDataset, openImageFolder } from "../src/data";

let root: string;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "loco-folder-"));
});
after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

/** A small PNG of one colour (value v in every channel). */
async function png(file: string, v: number, size = 6): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await sharp(Buffer.alloc(size * size * 3, v), { raw: { width: size, height: size, channels: 3 } })
    .png()
    .toFile(file);
}

async function classFolders(dir: string, counts: Record<string, number>, value = 10): Promise<void> {
  for (const [name, n] of Object.entries(counts)) {
    for (let i = 0; i < n; i++) await png(path.join(dir, name, `${i}.png`), value + i);
  }
}

describe("image folder layouts", () => {
  test("ImageNet layout: train/ + val/, and test/ when there is no val/", async () => {
    const d = path.join(root, "imagenet");
    await classFolders(path.join(d, "train"), { a: 3, b: 2 });
    await classFolders(path.join(d, "val"), { a: 1, b: 1 }, 100);
    assert.equal(folderSplitRoot(d, "train"), path.join(d, "train"));
    // val/ stands in for test/ (and the other way round).
    assert.equal(folderSplitRoot(d, "test"), path.join(d, "val"));
    const test = await openDataset({ name: "folder", dir: d, split: "test", size: 6 });
    assert.equal(test.count, 2);
    assert.deepEqual(test.classNames, ["a", "b"]);
    assert.equal(test.images.read([0])[0], 100, "read from val/");
    const t = path.join(root, "with-test");
    await classFolders(path.join(t, "train"), { a: 1 });
    await classFolders(path.join(t, "test"), { a: 1 });
    assert.equal(folderSplitRoot(t, "val"), path.join(t, "test"));
    assert.equal(folderSplitRoot(t, "test"), path.join(t, "test"));
  });

  test("class folders at the top: train reads the folder itself, a test split is asked for by name", async () => {
    const d = path.join(root, "flat-classes");
    await classFolders(d, { x: 2, y: 2 });
    const train = await openDataset({ name: "folder", dir: d, split: "train", size: 6 });
    assert.equal(train.count, 4);
    await assert.rejects(
      () => openDataset({ name: "folder", dir: d, split: "test", size: 6 }),
      (error: Error) => {
        assert.ok(error.message.startsWith(`${d}: has no val/ or test/ folder`), error.message);
        assert.match(error.message, /needs labelled images there, in class folders/);
        return true;
      },
    );
  });

  test("unlabelled folders: images directly in the folder (or in train/) have no labels", async () => {
    const d = path.join(root, "unlabelled");
    for (let i = 0; i < 3; i++) await png(path.join(d, `${i}.png`), i);
    const ds = await openImageFolder({ dir: d, split: "train", size: 6 });
    assert.equal(ds.count, 3);
    assert.equal(ds.labels, null);
    assert.equal(ds.numClasses, 0);
    const t = path.join(root, "unlabelled-train");
    for (let i = 0; i < 2; i++) await png(path.join(t, "train", `${i}.png`), i);
    await classFolders(path.join(t, "val"), { a: 1 });
    const pre = await openDataset({ name: "folder", dir: t, split: "train", size: 6, labelFree: true });
    assert.equal(pre.count, 2);
    assert.equal(pre.labels, null);
    // The readout needs labels: asking for a test split of a flat folder says what layout is needed.
    await assert.rejects(
      () => openDataset({ name: "folder", dir: d, split: "test", size: 6 }),
      /has no val\/ or test\/ folder; evaluation \(linear readout, kNN\) needs labelled images.*--readout-data-dir/,
    );
  });

  test("images beside class folders are refused, naming one", async () => {
    const d = path.join(root, "mixed");
    await classFolders(d, { a: 1 });
    await png(path.join(d, "stray.png"), 1);
    await assert.rejects(
      () => openImageFolder({ dir: d, size: 6 }),
      (error: Error) => {
        assert.ok(error.message.startsWith(`${d}: holds both class folders`), error.message);
        assert.ok(error.message.includes(path.join(d, "stray.png")), error.message);
        return true;
      },
    );
  });

  test("symbolic links to images and to class folders are followed, and counted per class", async () => {
    const store = path.join(root, "store");
    await classFolders(store, { real: 4 });
    const d = path.join(root, "linked");
    fs.mkdirSync(path.join(d, "cat"), { recursive: true });
    await png(path.join(d, "cat", "own.png"), 7);
    for (let i = 0; i < 4; i++)
      fs.symlinkSync(path.join(store, "real", `${i}.png`), path.join(d, "cat", `link${i}.png`));
    // A class folder that is itself a link (a common way to assemble a subset).
    fs.symlinkSync(path.join(store, "real"), path.join(d, "dog"));
    const listing = listImageFolder(d);
    assert.deepEqual(listing.classNames, ["cat", "dog"]);
    assert.deepEqual(listing.classCounts, [5, 4]);
    const logged: string[] = [];
    const ds = await openImageFolder({ dir: d, size: 6, log: (m) => logged.push(m) });
    assert.equal(ds.count, 9, "every linked image is read");
    assert.deepEqual(ds.classCounts, [5, 4]);
    assert.equal(logged.length, 1);
    assert.match(logged[0], /9 images in 2 classes \(cat 5, dog 4; 4 to 5 per class\)/);
    assert.match(describeListing(listing), /cat 5, dog 4/);
  });

  test("broken links and empty files are bad files: stop names them, skip reports them", async () => {
    const d = path.join(root, "bad-listed");
    await classFolders(d, { a: 2 });
    const broken = path.join(d, "a", "gone.png");
    fs.symlinkSync(path.join(root, "does-not-exist.png"), broken);
    const empty = path.join(d, "a", "empty.png");
    fs.writeFileSync(empty, "");
    await assert.rejects(
      () => openImageFolder({ dir: d, size: 6 }),
      (error: Error) => {
        // The first bad file in name order.
        assert.ok(error.message.startsWith(`${empty}: empty file (0 bytes)`), error.message);
        assert.equal((error as { userFacing?: boolean }).userFacing, true);
        return true;
      },
    );
    const skipped: string[] = [];
    const ds = await openImageFolder({ dir: d, size: 6, onBadImage: "skip", onSkip: (f) => skipped.push(f) });
    assert.equal(ds.count, 2);
    assert.deepEqual(skipped.sort(), [empty, broken].sort());
    assert.match(ds.skipped.find((s) => s.file === broken)!.reason, /broken symbolic link \(ENOENT\)/);
  });
});
