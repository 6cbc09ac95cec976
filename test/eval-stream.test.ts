// Evaluation on a streamed image folder (src/learning/readout.ts evalBatches): the labelled splits of
// a folder are never decoded whole. Their batches come from a DataLoader, in dataset order, each
// freed when the next is asked for; the images are those the in-memory folder holds (up to the
// resize kernel), every-k-th subsets stream too, and a bad file is skipped and said once.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { liveTensors } from "../src/torch";
import { type ImageDataset, openDataset, writeSyntheticFolder } from "../src/data";
import type { EvalBatch } from "../src/eval";
import { evalBatches, evalDataSpec, strided } from "../src/learning/readout";

let root: string;
let folder: string;
before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "loco-eval-stream-"));
  folder = path.join(root, "synthetic");
  await writeSyntheticFolder(folder, { classes: 3, train: 5, val: 2, sizes: [40, 90], seed: 4 });
});
after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

const SIZE = 20;

/** Pixels (copied out) and labels of every batch, checking that each batch is freed after use. */
async function collect(
  batches: AsyncIterable<EvalBatch>,
): Promise<{ sizes: number[]; labels: number[]; images: Float32Array[] }> {
  const out = { sizes: [] as number[], labels: [] as number[], images: [] as Float32Array[] };
  const live = liveTensors();
  for await (const b of batches) {
    const n = b.images.shape[0];
    out.sizes.push(n);
    out.labels.push(...b.labels.toArray().map(Number));
    const data = b.images.data() as Float32Array;
    const per = data.length / n;
    for (let k = 0; k < n; k++) out.images.push(data.slice(k * per, (k + 1) * per));
    // This batch's two tensors at most, whatever the number already seen.
    assert.ok(liveTensors() <= live + 2, `batch ${out.sizes.length}: ${liveTensors() - live} tensors alive`);
  }
  assert.equal(liveTensors(), live, "the last batch is freed when the loop ends");
  return out;
}

const meanAbs = (a: Float32Array, b: Float32Array): number =>
  a.reduce((s, x, i) => s + Math.abs(x - b[i]), 0) / a.length;

describe("evaluation on a streamed image folder", () => {
  test("a folder's labelled split streams, in order, each batch freed; the images match the in-memory folder's", async () => {
    const spec = { name: "folder" as const, dir: folder, split: "train", size: SIZE };
    assert.equal(evalDataSpec(spec).stream, true);
    assert.equal(evalDataSpec({ name: "mnist", dir: "x" }).stream, undefined, "other datasets are left as given");
    const streamed = await openDataset(evalDataSpec(spec));
    assert.throws(() => streamed.images.read([0]), /read through a DataLoader/, "nothing is decoded at open");
    const batches = evalBatches(streamed, 4, null, { workers: 1 });
    assert.ok(!(Symbol.iterator in batches) && Symbol.asyncIterator in batches, "async batches from a loader");
    const got = await collect(batches as AsyncIterable<EvalBatch>);
    assert.deepEqual(got.sizes, [4, 4, 4, 3], "every image once, the last batch partial");
    assert.deepEqual(got.labels, Array.from(streamed.labels!));

    // The in-memory folder (decoded at open, a Lanczos resize) holds the same images: each streamed
    // image (a linear antialiased resize of the same centre) is nearest to its own counterpart.
    const memory = await openDataset(spec);
    const sync = [...(evalBatches(memory, 4, null) as Iterable<EvalBatch>)];
    const reference: Float32Array[] = [];
    for (const b of sync) {
      const data = b.images.data() as Float32Array;
      const n = b.images.shape[0];
      for (let k = 0; k < n; k++) reference.push(data.slice((k * data.length) / n, ((k + 1) * data.length) / n));
      b.images.release();
      b.labels.release();
    }
    assert.equal(reference.length, got.images.length);
    got.images.forEach((img, i) => {
      const own = meanAbs(img, reference[i]);
      assert.ok(own < 0.03, `image ${i}: mean difference ${own.toFixed(4)} from the in-memory image`);
      reference.forEach((other, j) => {
        if (j !== i) assert.ok(own < meanAbs(img, other), `image ${i} is nearer image ${j} than its own`);
      });
    });
  });

  test("an every-k-th subset of a streamed split streams (the readout's and the kNN monitor's)", async () => {
    const streamed = await openDataset(evalDataSpec({ name: "folder", dir: folder, split: "train", size: SIZE }));
    const all = await collect(evalBatches(streamed, 8, null, { workers: 0 }) as AsyncIterable<EvalBatch>);
    const every: ImageDataset = strided(streamed, 5);
    assert.equal(every.count, 5);
    const picked = await collect(evalBatches(every, 2, null, { workers: 2 }) as AsyncIterable<EvalBatch>);
    assert.deepEqual(picked.sizes, [2, 2, 1]);
    assert.deepEqual(picked.labels, Array.from(every.labels!));
    [0, 3, 6, 9, 12].forEach((i, k) => assert.deepEqual(picked.images[k], all.images[i], `image ${k} is image ${i}`));
  });

  test("a bad file: stops naming it, or is skipped (its place taken by the next image) and said once", async () => {
    const d = path.join(root, "with-bad");
    fs.cpSync(folder, d, { recursive: true });
    const bad = path.join(d, "val", "class001", "img000000.jpg");
    fs.writeFileSync(bad, "not a JPEG\n");
    const stop = await openDataset(evalDataSpec({ name: "folder", dir: d, split: "val", size: SIZE }));
    await assert.rejects(
      collect(evalBatches(stop, 4, null) as AsyncIterable<EvalBatch>),
      (e: Error) => e.name === "BadImageError" && e.message.startsWith(`${bad}: cannot decode image`),
    );
    const skip = await openDataset(
      evalDataSpec({ name: "folder", dir: d, split: "val", size: SIZE, onBadImage: "skip" }),
    );
    const told: string[] = [];
    const got = await collect(
      evalBatches(skip, 4, null, { onBadImage: (b) => told.push(b.file) }) as AsyncIterable<EvalBatch>,
    );
    assert.deepEqual(told, [bad]);
    assert.equal(got.images.length, 6);
    // Position 2 (the bad class001 image) holds position 3's image, with its label.
    assert.deepEqual(got.images[2], got.images[3]);
    assert.deepEqual(got.labels, [0, 0, 1, 1, 2, 2]);
  });
});
