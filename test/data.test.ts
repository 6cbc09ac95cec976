// Datasets on small files written here in each real format (IDX raw and gzipped, CIFAR-10 and
// CIFAR-100 binary, STL-10 binary with its column-major planes, an image folder of PNG and JPEG
// files), and corrupt versions of each, which must fail with an error naming the file and the
// fault. Also: deterministic subsets, label-free mode, concatenation, openDataset.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import {
  CIFAR100_COARSE_CLASSES,
  CIFAR100_FINE_CLASSES,
  CIFAR10_CLASSES,
  DEFAULT_FASHION_MNIST_DIR,
  STL10_CLASSES,
  concat,
  openCifar10,
  openCifar100,
  openDataset,
  openImageFolder,
  openMnist,
  openSource,
  openStl10,
  subset,
  withoutLabels,
  writeCifarBinary,
  writeIdx,
  writeStl10Images,
  writeStl10Labels,
} from "../src/data";

let root: string;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "loco-data-"));
});
after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

function dir(name: string): string {
  const d = path.join(root, name);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

/** Deterministic test bytes: image k, byte j. */
function pattern(n: number, size: number, salt = 0): Uint8Array {
  const out = new Uint8Array(n * size);
  for (let i = 0; i < out.length; i++) out[i] = (i * 31 + salt * 7 + Math.floor(i / size) * 13) & 0xff;
  return out;
}

/** assert.throws with a message that must name the file and match `what`. */
function throwsNaming(fn: () => unknown, file: string, what: RegExp): void {
  assert.throws(fn, (error: Error) => {
    assert.ok(error.message.includes(file), `error should name ${file}: ${error.message}`);
    assert.match(error.message, what);
    return true;
  });
}

async function rejectsNaming(fn: () => Promise<unknown>, file: string, what: RegExp): Promise<void> {
  await assert.rejects(fn, (error: Error) => {
    assert.ok(error.message.includes(file), `error should name ${file}: ${error.message}`);
    assert.match(error.message, what);
    return true;
  });
}

// ---- IDX (MNIST / Fashion-MNIST) ----------------------------------------------------------------

function writeMnist(d: string, split: "train" | "t10k", n: number, gz: boolean, labels?: number[]): Uint8Array {
  const images = pattern(n, 28 * 28, split === "train" ? 1 : 2);
  const suffix = gz ? ".gz" : "";
  writeIdx(path.join(d, `${split}-images-idx3-ubyte${suffix}`), [n, 28, 28], images);
  writeIdx(
    path.join(d, `${split}-labels-idx1-ubyte${suffix}`),
    [n],
    Uint8Array.from(labels ?? Array.from({ length: n }, (_, i) => i % 10)),
  );
  return images;
}

describe("MNIST-format IDX datasets", () => {
  for (const gz of [false, true]) {
    test(`reads train and test splits (${gz ? "gzipped" : "raw"})`, () => {
      const d = dir(`mnist-${gz}`);
      const trainImages = writeMnist(d, "train", 12, gz);
      writeMnist(d, "t10k", 5, gz);
      const train = openMnist({ dir: d, split: "train", variant: "mnist" });
      assert.equal(train.count, 12);
      assert.deepEqual([train.channels, train.height, train.width, train.numClasses], [1, 28, 28, 10]);
      assert.equal(train.classNames[3], "3");
      assert.deepEqual(Array.from(train.labels!.subarray(0, 4)), [0, 1, 2, 3]);
      assert.deepEqual(train.images.read([7]), trainImages.subarray(7 * 784, 8 * 784));
      const test = openMnist({ dir: d, split: "test" });
      assert.equal(test.count, 5);
      assert.equal(test.classNames[9], "Ankle boot");
      assert.equal(openMnist({ dir: d, labelFree: true }).labels, null);
    });
  }

  test("truncated image file", () => {
    const d = dir("mnist-trunc");
    writeMnist(d, "train", 4, false);
    const f = path.join(d, "train-images-idx3-ubyte");
    fs.truncateSync(f, fs.statSync(f).size - 100);
    throwsNaming(() => openMnist({ dir: d }), f, /truncated/);
  });

  test("truncated gzip stream", () => {
    const d = dir("mnist-trunc-gz");
    writeMnist(d, "train", 4, true);
    const f = path.join(d, "train-images-idx3-ubyte.gz");
    fs.truncateSync(f, Math.floor(fs.statSync(f).size / 2));
    throwsNaming(() => openMnist({ dir: d }), f, /gzip data is corrupt or truncated/);
  });

  test("bad magic number", () => {
    const d = dir("mnist-magic");
    writeMnist(d, "train", 4, false);
    const f = path.join(d, "train-labels-idx1-ubyte");
    const bytes = fs.readFileSync(f);
    bytes[0] = 0x1f;
    bytes[1] = 0x00;
    fs.writeFileSync(f, bytes);
    throwsNaming(() => openMnist({ dir: d }), f, /bad IDX magic/);
  });

  test("wrong element type and dimension count", () => {
    const d = dir("mnist-type");
    writeMnist(d, "train", 4, false);
    const f = path.join(d, "train-images-idx3-ubyte");
    const bytes = fs.readFileSync(f);
    bytes[2] = 0x0d; // float
    fs.writeFileSync(f, bytes);
    throwsNaming(() => openMnist({ dir: d }), f, /element type 0xd/);
    writeIdx(f, [4, 784], pattern(4, 784));
    throwsNaming(() => openMnist({ dir: d }), f, /expected a 3-dimensional/);
  });

  test("label out of range and count mismatch", () => {
    const d = dir("mnist-label");
    writeMnist(d, "train", 4, true, [0, 1, 10, 3]);
    const f = path.join(d, "train-labels-idx1-ubyte.gz");
    throwsNaming(() => openMnist({ dir: d }), f, /label 10 at index 2 is out of range/);
    writeIdx(f, [3], Uint8Array.of(0, 1, 2));
    throwsNaming(() => openMnist({ dir: d }), f, /holds 3 labels but .* holds 4 images/);
  });

  test("missing file names the folder", () => {
    const d = dir("mnist-missing");
    throwsNaming(() => openMnist({ dir: d }), d, /missing train-images-idx3-ubyte/);
  });

  test("the default Fashion-MNIST folder opens (when installed)", (t) => {
    if (!fs.existsSync(DEFAULT_FASHION_MNIST_DIR)) return t.skip(`${DEFAULT_FASHION_MNIST_DIR} not installed`);
    const test = openMnist({ split: "test" });
    assert.equal(test.count, 10000);
    assert.equal(test.name, "fashion-mnist/test");
    assert.equal(test.labels![0], 9); // the first test image is an ankle boot
  });
});

// ---- CIFAR-10 / CIFAR-100 ----------------------------------------------------------------------

describe("CIFAR binary datasets", () => {
  function writeCifar10(d: string, perBatch: number): { train: Uint8Array; test: Uint8Array } {
    const train: Uint8Array[] = [];
    for (let b = 1; b <= 5; b++) {
      const images = pattern(perBatch, 3072, b);
      writeCifarBinary(
        path.join(d, `data_batch_${b}.bin`),
        Array.from({ length: perBatch }, (_, i) => (b + i) % 10),
        images,
      );
      train.push(images);
    }
    const test = pattern(3, 3072, 9);
    writeCifarBinary(path.join(d, "test_batch.bin"), [9, 8, 7], test);
    return { train: Uint8Array.from(train.flatMap((a) => Array.from(a))), test };
  }

  test("CIFAR-10: records, labels, CHW pixels, class names", () => {
    const d = dir("cifar10");
    const { train, test } = writeCifar10(d, 2);
    const ds = openCifar10({ dir: d, split: "train" });
    assert.equal(ds.count, 10);
    assert.deepEqual([ds.channels, ds.height, ds.width, ds.numClasses], [3, 32, 32, 10]);
    assert.deepEqual(ds.classNames, CIFAR10_CLASSES);
    assert.deepEqual(Array.from(ds.labels!), [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]);
    assert.deepEqual(
      ds.images.read([4, 0]),
      Uint8Array.from([...train.subarray(4 * 3072, 5 * 3072), ...train.subarray(0, 3072)]),
    );
    // Channel-major: byte 1024 of an image is the red plane's end, i.e. green (0, 0).
    const one = ds.images.read([3]);
    assert.equal(one[1024], train[3 * 3072 + 1024]);
    const t = openCifar10({ dir: d, split: "test" });
    assert.deepEqual(Array.from(t.labels!), [9, 8, 7]);
    assert.deepEqual(t.images.read([0, 1, 2]), test);
    fs.writeFileSync(path.join(d, "batches.meta.txt"), "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n\n");
    assert.equal(openCifar10({ dir: d }).classNames[9], "j");
  });

  test("CIFAR-10 corrupt files", () => {
    const d = dir("cifar10-bad");
    writeCifar10(d, 2);
    const f = path.join(d, "data_batch_3.bin");
    fs.truncateSync(f, 3073 + 100);
    throwsNaming(() => openCifar10({ dir: d }), f, /not a whole number of 3073-byte records .*truncated/);
    writeCifarBinary(f, [1, 12], pattern(2, 3072));
    throwsNaming(() => openCifar10({ dir: d }), f, /class label 12 in record 1 is out of range/);
    // A CIFAR-100 file where CIFAR-10 is expected: wrong record size.
    writeCifarBinary(
      f,
      [
        [1, 2],
        [3, 4],
        [5, 6],
      ],
      pattern(3, 3072),
    );
    throwsNaming(() => openCifar10({ dir: d }), f, /3073-byte records/);
    fs.rmSync(f);
    throwsNaming(() => openCifar10({ dir: d }), f, /missing/);
    fs.writeFileSync(path.join(d, "data_batch_3.bin"), Buffer.alloc(0));
    throwsNaming(() => openCifar10({ dir: d }), f, /empty file/);
  });

  test("CIFAR-100: fine and coarse labels", () => {
    const d = dir("cifar100");
    const images = pattern(4, 3072, 3);
    writeCifarBinary(
      path.join(d, "train.bin"),
      [
        [0, 99],
        [19, 5],
        [3, 42],
        [7, 7],
      ],
      images,
    );
    writeCifarBinary(path.join(d, "test.bin"), [[1, 1]], pattern(1, 3072));
    assert.equal(CIFAR100_FINE_CLASSES.length, 100);
    assert.equal(CIFAR100_COARSE_CLASSES.length, 20);
    const fine = openCifar100({ dir: d });
    assert.deepEqual(Array.from(fine.labels!), [99, 5, 42, 7]);
    assert.equal(fine.numClasses, 100);
    assert.equal(fine.classNames[99], "worm");
    assert.deepEqual(fine.images.read([0, 1, 2, 3]), images);
    const coarse = openCifar100({ dir: d, labels: "coarse" });
    assert.deepEqual(Array.from(coarse.labels!), [0, 19, 3, 7]);
    assert.equal(coarse.numClasses, 20);
    assert.equal(openCifar100({ dir: d, split: "test" }).count, 1);
  });

  test("CIFAR-100 corrupt files", () => {
    const d = dir("cifar100-bad");
    const f = path.join(d, "train.bin");
    writeCifarBinary(f, [[0, 100]], pattern(1, 3072));
    throwsNaming(() => openCifar100({ dir: d }), f, /fine label 100 in record 0 is out of range/);
    writeCifarBinary(f, [[20, 1]], pattern(1, 3072));
    throwsNaming(() => openCifar100({ dir: d }), f, /coarse label 20/);
    // CIFAR-10 records where CIFAR-100 is expected.
    writeCifarBinary(f, [1, 2], pattern(2, 3072));
    throwsNaming(() => openCifar100({ dir: d }), f, /3074-byte records/);
  });
});

// ---- STL-10 ----------------------------------------------------------------------------------------

describe("STL-10 binary", () => {
  const IMG = 3 * 96 * 96;

  test("column-major planes land in the right place", () => {
    const d = dir("stl10");
    // Row-major images with distinct values at (c, y, x).
    const images = pattern(3, IMG, 5);
    writeStl10Images(path.join(d, "train_X.bin"), images);
    writeStl10Labels(path.join(d, "train_y.bin"), [0, 9, 4]);
    writeStl10Images(path.join(d, "test_X.bin"), pattern(2, IMG, 6));
    writeStl10Labels(path.join(d, "test_y.bin"), [1, 2]);
    writeStl10Images(path.join(d, "unlabeled_X.bin"), pattern(4, IMG, 7));

    // Check the file layout itself against the format's definition, byte by byte: in the file,
    // the value of channel c, row y, column x of image n is at n·27648 + c·9216 + x·96 + y.
    const raw = fs.readFileSync(path.join(d, "train_X.bin"));
    const [n, c, y, x] = [1, 2, 10, 70];
    const rowMajor = images[n * IMG + c * 9216 + y * 96 + x];
    assert.equal(raw[n * IMG + c * 9216 + x * 96 + y], rowMajor);
    // Hand-written file: one image whose red plane has a single bright pixel at row 3, column 80.
    const hand = new Uint8Array(IMG);
    hand[80 * 96 + 3] = 255; // column-major position of (y=3, x=80)
    fs.writeFileSync(path.join(d, "test_X.bin"), hand);
    writeStl10Labels(path.join(d, "test_y.bin"), [2]);

    const train = openStl10({ dir: d, split: "train" });
    assert.deepEqual([train.count, train.channels, train.height, train.width], [3, 3, 96, 96]);
    assert.deepEqual(Array.from(train.labels!), [0, 9, 4]);
    assert.deepEqual(train.classNames, STL10_CLASSES);
    assert.deepEqual(
      train.images.read([2, 1]),
      Uint8Array.from([...images.subarray(2 * IMG), ...images.subarray(IMG, 2 * IMG)]),
    );
    const test = openStl10({ dir: d, split: "test" });
    const px = test.images.read([0]);
    assert.equal(px[3 * 96 + 80], 255, "row 3, column 80 of the red plane");
    assert.equal(
      px.reduce((a, b) => a + b, 0),
      255,
    );

    const unlabeled = openStl10({ dir: d, split: "unlabeled" });
    assert.equal(unlabeled.count, 4);
    assert.equal(unlabeled.labels, null);
    const both = openStl10({ dir: d, split: "train+unlabeled" });
    assert.equal(both.count, 7);
    assert.equal(both.labels, null);
    assert.deepEqual(both.images.read([3]), unlabeled.images.read([0]));
    assert.deepEqual(both.images.read([1]), train.images.read([1]));
    // The source reopens from its spec (as in a loader worker) and reads the same bytes.
    const reopened = openSource(both.images.spec());
    assert.deepEqual(reopened.read([6, 0]), both.images.read([6, 0]));
    reopened.close();
    for (const ds of [train, test, unlabeled, both]) ds.images.close();
  });

  test("corrupt STL-10 files", () => {
    const d = dir("stl10-bad");
    const x = path.join(d, "train_X.bin");
    const y = path.join(d, "train_y.bin");
    writeStl10Images(x, pattern(2, IMG));
    writeStl10Labels(y, [0, 11 - 1]);
    throwsNaming(() => openStl10({ dir: d }), y, /label 11 at index 1 is out of range/);
    fs.writeFileSync(y, Uint8Array.of(0, 1));
    throwsNaming(() => openStl10({ dir: d }), y, /label 0 at index 0 is out of range \(STL-10 labels are 1 to 10\)/);
    writeStl10Labels(y, [0]);
    throwsNaming(() => openStl10({ dir: d }), y, /holds 1 labels but .*train_X.bin holds 2 images/);
    writeStl10Labels(y, [0, 1]);
    fs.truncateSync(x, IMG + 5000);
    throwsNaming(() => openStl10({ dir: d }), x, /not a whole number of 3x96x96 images .*truncated/);
    throwsNaming(() => openStl10({ dir: d, split: "unlabeled" }), path.join(d, "unlabeled_X.bin"), /cannot read/);
  });
});

// ---- image folder -------------------------------------------------------------------------------

describe("image folder", () => {
  async function writeImage(
    file: string,
    width: number,
    height: number,
    fill: (x: number, y: number) => [number, number, number],
  ): Promise<Uint8Array> {
    const px = new Uint8Array(width * height * 3);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) px.set(fill(x, y), (y * width + x) * 3);
    }
    const img = sharp(Buffer.from(px), { raw: { width, height, channels: 3 } });
    await (file.endsWith(".png") ? img.png() : img.jpeg({ quality: 95 })).toFile(file);
    return px;
  }

  test("classes from sub-folders, PNG and JPEG decoded and resized", async () => {
    const d = dir("folder/train");
    fs.mkdirSync(path.join(d, "cat"));
    fs.mkdirSync(path.join(d, "dog"));
    fs.writeFileSync(path.join(d, "cat", "notes.txt"), "ignored");
    // A PNG already at the output size: pixels must come through exactly (CHW).
    const png = await writeImage(path.join(d, "dog", "a.png"), 8, 8, (x, y) => [x * 30, y * 30, 200]);
    // A JPEG of one flat colour at another size: resized, and the colour survives compression.
    await writeImage(path.join(d, "cat", "b.jpg"), 20, 12, () => [200, 40, 90]);
    await writeImage(path.join(d, "cat", "c.jpeg"), 8, 8, () => [10, 250, 10]);
    const ds = await openImageFolder({ dir: path.dirname(d), split: "train", size: 8 });
    assert.deepEqual(ds.classNames, ["cat", "dog"]);
    assert.equal(ds.count, 3);
    assert.deepEqual(Array.from(ds.labels!), [0, 0, 1]);
    assert.deepEqual(
      ds.files.map((f) => path.basename(f)),
      ["b.jpg", "c.jpeg", "a.png"],
    );
    const all = ds.images.read([0, 1, 2]);
    const plane = 64;
    // PNG: exact, channel-major.
    for (let y = 0; y < 8; y++) {
      for (let x = 0; x < 8; x++) {
        for (let c = 0; c < 3; c++) assert.equal(all[2 * 3 * plane + c * plane + y * 8 + x], png[(y * 8 + x) * 3 + c]);
      }
    }
    // JPEG: close to the flat colour.
    const mean = (img: number, c: number) => {
      let s = 0;
      for (let p = 0; p < plane; p++) s += all[img * 3 * plane + c * plane + p];
      return s / plane;
    };
    assert.ok(Math.abs(mean(0, 0) - 200) < 6 && Math.abs(mean(0, 1) - 40) < 6 && Math.abs(mean(0, 2) - 90) < 6);
    assert.ok(Math.abs(mean(1, 1) - 250) < 6);
    // Greyscale decoding.
    const gray = await openImageFolder({ dir: d, size: [4, 6], channels: 1, fit: "fill", labelFree: true });
    assert.deepEqual([gray.channels, gray.height, gray.width], [1, 4, 6]);
    assert.equal(gray.labels, null);
  });

  test("a bad image is an error naming it, or skipped and reported", async () => {
    const d = dir("folder-bad");
    fs.mkdirSync(path.join(d, "a"));
    fs.mkdirSync(path.join(d, "b"));
    await writeImage(path.join(d, "a", "ok.png"), 4, 4, () => [1, 2, 3]);
    await writeImage(path.join(d, "b", "ok.jpg"), 4, 4, () => [1, 2, 3]);
    const garbage = path.join(d, "b", "garbage.jpg");
    fs.writeFileSync(garbage, "this is not a JPEG");
    const truncated = path.join(d, "a", "truncated.png");
    await writeImage(truncated, 16, 16, (x, y) => [x, y, x ^ y]);
    fs.truncateSync(truncated, Math.floor(fs.statSync(truncated).size / 2));
    await assert.rejects(
      () => openImageFolder({ dir: d, size: 4 }),
      (error: Error) => {
        assert.match(error.message, /cannot decode image/);
        assert.ok(error.message.startsWith(`${truncated}:`) || error.message.startsWith(`${garbage}:`), error.message);
        return true;
      },
    );
    const reported: string[] = [];
    const ds = await openImageFolder({ dir: d, size: 4, onBadImage: "skip", onSkip: (file) => reported.push(file) });
    assert.deepEqual(reported.sort(), [truncated, garbage].sort());
    assert.deepEqual(ds.skipped.map((s) => s.file).sort(), [truncated, garbage].sort());
    assert.equal(ds.count, 2);
    assert.deepEqual(Array.from(ds.labels!), [0, 1]);
  });

  test("structural errors name the folder", async () => {
    const d = dir("folder-empty");
    await rejectsNaming(() => openImageFolder({ dir: d, size: 4 }), d, /no class folders/);
    fs.mkdirSync(path.join(d, "x"));
    await rejectsNaming(() => openImageFolder({ dir: d, size: 4 }), path.join(d, "x"), /holds no images/);
    await rejectsNaming(() => openImageFolder({ dir: path.join(d, "nope"), size: 4 }), "nope", /cannot list/);
  });
});

// ---- generic views ----------------------------------------------------------------------------

describe("subset, label-free, concat, openDataset", () => {
  function cifarDir(): string {
    const d = dir("cifar10-views");
    if (!fs.existsSync(path.join(d, "test_batch.bin"))) {
      for (let b = 1; b <= 5; b++) {
        writeCifarBinary(
          path.join(d, `data_batch_${b}.bin`),
          Array.from({ length: 20 }, (_, i) => i % 10),
          pattern(20, 3072, b),
        );
      }
      writeCifarBinary(
        path.join(d, "test_batch.bin"),
        Array.from({ length: 20 }, (_, i) => i % 10),
        pattern(20, 3072, 0),
      );
    }
    return d;
  }

  test("subset is deterministic, seeded, in dataset order, and balanced on request", () => {
    const ds = openCifar10({ dir: cifarDir() });
    const a = subset(ds, { count: 17, seed: 3 });
    const b = subset(ds, { count: 17, seed: 3 });
    const c = subset(ds, { count: 17, seed: 4 });
    const idx = (s: typeof a) => Array.from((s.images as unknown as { indices: Int32Array }).indices);
    assert.deepEqual(idx(a), idx(b));
    assert.notDeepEqual(idx(a), idx(c));
    assert.deepEqual(
      idx(a),
      [...idx(a)].sort((x, y) => x - y),
    );
    assert.equal(a.count, 17);
    // Labels and pixels follow the chosen images.
    const first = idx(a)[0];
    assert.equal(a.labels![0], ds.labels![first]);
    assert.deepEqual(a.images.read([0]), ds.images.read([first]));
    const bal = subset(ds, { count: 30, seed: 1, balanced: true });
    const counts = new Array(10).fill(0);
    for (const l of bal.labels!) counts[l]++;
    assert.deepEqual(counts, new Array(10).fill(3));
    assert.equal(subset(ds, { count: 12, seed: 1, balanced: true }).count, 12);
    assert.throws(() => subset(ds, { count: 101 }), /count must be an integer in \[1, 100\]/);
    assert.throws(() => subset(withoutLabels(ds), { count: 10, balanced: true }), /balanced needs labels/);
    const uneven = dir("cifar10-uneven");
    for (const name of ["test_batch.bin"]) {
      writeCifarBinary(path.join(uneven, name), [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9], pattern(13, 3072));
    }
    const few = openCifar10({ dir: uneven, split: "test" });
    assert.throws(
      () => subset(few, { count: 13, balanced: true }),
      /needs 2 images of class 1 \(automobile\), cifar10\/test has 1/,
    );
  });

  test("label-free mode and concat", () => {
    const d = cifarDir();
    const train = openCifar10({ dir: d });
    const free = openCifar10({ dir: d, labelFree: true });
    assert.equal(free.labels, null);
    assert.equal(free.numClasses, 10);
    assert.deepEqual(free.images.read([5]), train.images.read([5]));
    const test = openCifar10({ dir: d, split: "test" });
    const both = concat([train, test]);
    assert.equal(both.count, 120);
    assert.equal(both.labels![100], test.labels![0]);
    assert.deepEqual(both.images.read([101]), test.images.read([1]));
    assert.equal(concat([free, test]).labels, null);
  });

  test("openDataset validates its spec", async () => {
    const d = cifarDir();
    const ds = await openDataset({
      name: "cifar10",
      dir: d,
      split: "test",
      subset: { count: 10, seed: 0, balanced: true },
      labelFree: true,
    });
    assert.equal(ds.count, 10);
    assert.equal(ds.labels, null);
    await assert.rejects(() => openDataset({ name: "imagenet" as "cifar10" }), /name must be one of/);
    await assert.rejects(() => openDataset({ name: "cifar10" }), /dir is required/);
    await assert.rejects(
      () => openDataset({ name: "cifar10", dir: d, split: "val" }),
      /split must be "train" or "test"/,
    );
    await assert.rejects(() => openDataset({ name: "folder", dir: d }), /size is required/);
  });
});
