// Augmentations: the documented statistics (crop areas and aspect ratios within range, measured from
// the sampled boxes and from the pixels; flip rate; jitter factors and their effect; grayscale;
// blur), identical output for identical seeds, and agreement with torchvision's functional ops
// (torchvision 0.14, /usr/bin/python3) for the same per-image choices.
import { before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { type Tensor, fromTypedArray, liveTensors, rand, scope, Generator } from "../src/torch";
import {
  Augmentation,
  type AugmentConfig,
  type SampleParams,
  Rng,
  grayscale,
  presetByName,
  sampleCrop,
  augmentChunkImages,
  augmentInChunks,
  simclrCifar,
  simclrImagenet,
} from "../src/data";

/** An image whose channel 0 holds its column coordinate and channel 1 its row coordinate. */
function coordinateImages(n: number, h: number, w: number): Tensor {
  const data = new Float32Array(n * 3 * h * w);
  for (let b = 0; b < n; b++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const o = b * 3 * h * w + y * w + x;
        data[o] = x / (w - 1);
        data[o + h * w] = y / (h - 1);
        data[o + 2 * h * w] = 0.5;
      }
    }
  }
  return fromTypedArray(data, [n, 3, h, w]);
}

describe("random resized crop and flip", () => {
  test("sampled crop areas and aspect ratios stay in range, boxes inside the image", () => {
    const rng = new Rng(1);
    const [H, W] = [96, 128];
    const areas: number[] = [];
    for (let i = 0; i < 4000; i++) {
      const c = sampleCrop(rng, H, W, [0.08, 1], [3 / 4, 4 / 3]);
      assert.ok(c.top >= 0 && c.left >= 0 && c.top + c.height <= H && c.left + c.width <= W, JSON.stringify(c));
      const area = (c.height * c.width) / (H * W);
      areas.push(area);
      // Rounding each side to whole pixels moves the area and ratio by at most a pixel's worth.
      assert.ok(area >= 0.08 - 0.01 && area <= 1, `area ${area}`);
      const ratio = c.width / c.height;
      assert.ok(ratio >= (3 / 4) * 0.94 && ratio <= (4 / 3) * 1.06, `ratio ${ratio}`);
    }
    areas.sort((a, b) => a - b);
    assert.ok(areas[0] < 0.1, `smallest area ${areas[0]}`);
    assert.ok(areas[areas.length - 1] > 0.95, `largest area ${areas[areas.length - 1]}`);
    const median = areas[areas.length >> 1];
    assert.ok(median > 0.3 && median < 0.6, `median area ${median}`);
  });

  test("the fallback is the largest centred crop within the ratio range", () => {
    // A 10 x 100 strip: no crop of area >= 0.9 fits with aspect <= 4/3, so the fallback applies.
    const c = sampleCrop(new Rng(0), 10, 100, [0.9, 1], [3 / 4, 4 / 3]);
    assert.deepEqual(c, { top: 0, left: 43, height: 10, width: 13 });
  });

  test("the output shows the sampled box and the flip (measured from the pixels)", () => {
    const aug = new Augmentation({ size: 24, crop: { scale: [0.1, 1] }, hflip: 0.5 });
    const [H, W] = [40, 48];
    const n = 400;
    const images = coordinateImages(n, H, W);
    const { output, params } = aug.run(images, new Rng(7));
    const out = output.data() as Float32Array;
    let flips = 0;
    const plane = 24 * 24;
    for (let b = 0; b < n; b++) {
      const p = params[b];
      const base = b * 3 * plane;
      let [xmin, xmax, ymin, ymax] = [Infinity, -Infinity, Infinity, -Infinity];
      for (let i = 0; i < plane; i++) {
        xmin = Math.min(xmin, out[base + i]);
        xmax = Math.max(xmax, out[base + i]);
        ymin = Math.min(ymin, out[base + plane + i]);
        ymax = Math.max(ymax, out[base + plane + i]);
      }
      // Bilinear sampling of a linear ramp reproduces the coordinates; the outermost samples lie
      // at most half an output pixel inside the box (and never outside it).
      const tolX = (0.5 * p.crop.width) / 24 + 1e-3;
      const tolY = (0.5 * p.crop.height) / 24 + 1e-3;
      assert.ok(
        xmin * (W - 1) >= p.crop.left - 1e-3 && xmin * (W - 1) <= p.crop.left + tolX,
        `left ${xmin * (W - 1)} vs ${p.crop.left}`,
      );
      assert.ok(
        xmax * (W - 1) <= p.crop.left + p.crop.width - 1 + 1e-3 &&
          xmax * (W - 1) >= p.crop.left + p.crop.width - 1 - tolX,
      );
      assert.ok(ymin * (H - 1) >= p.crop.top - 1e-3 && ymin * (H - 1) <= p.crop.top + tolY);
      assert.ok(
        ymax * (H - 1) <= p.crop.top + p.crop.height - 1 + 1e-3 &&
          ymax * (H - 1) >= p.crop.top + p.crop.height - 1 - tolY,
      );
      const flippedInPixels = out[base] > out[base + 23];
      assert.equal(flippedInPixels, p.flip, `image ${b}: flip`);
      if (flippedInPixels) flips++;
    }
    // 400 fair coin flips: 5 standard deviations is 0.125.
    assert.ok(Math.abs(flips / n - 0.5) < 0.125, `flip rate ${flips / n}`);
    images.dispose();
    output.dispose();
  });

  test("flip rate over many samples", () => {
    const aug = new Augmentation({ size: 8, hflip: 0.5 });
    const params = aug.sample(new Rng(3), 20000, 8, 8);
    const rate = params.filter((p) => p.flip).length / params.length;
    assert.ok(Math.abs(rate - 0.5) < 0.02, `flip rate ${rate}`);
    const never = new Augmentation({ size: 8 }).sample(new Rng(3), 100, 8, 8);
    assert.ok(never.every((p) => !p.flip));
  });

  test("no crop and the native size: the identity (flip only mirrors)", () => {
    const x = rand([3, 2, 5, 6], { generator: new Generator(1) });
    const aug = new Augmentation({ size: [5, 6] });
    const same = aug.apply(x, aug.sample(new Rng(0), 3, 5, 6));
    assert.ok(same.equal(x));
    const params = aug.sample(new Rng(0), 3, 5, 6).map((p, i) => ({ ...p, flip: i === 1 }));
    const mirrored = aug.apply(x, params);
    scope(() => {
      assert.ok(mirrored.select(0, 1).equal(x.select(0, 1).flip([2])));
      assert.ok(mirrored.select(0, 0).equal(x.select(0, 0)));
    });
    for (const t of [x, same, mirrored]) t.dispose();
  });
});

describe("colour", () => {
  test("jitter: probability, random order, factors within range", () => {
    const aug = new Augmentation(simclrCifar());
    const params = aug.sample(new Rng(11), 20000, 32, 32);
    const jittered = params.filter((p) => p.jitter !== null);
    const rate = jittered.length / params.length;
    assert.ok(Math.abs(rate - 0.8) < 0.02, `jitter rate ${rate}`);
    const orders = new Set<string>();
    for (const { jitter } of jittered) {
      const j = jitter!;
      assert.deepEqual([...j.order].sort(), [0, 1, 2, 3]);
      orders.add(j.order.join(""));
      for (const f of [j.brightness, j.contrast, j.saturation]) assert.ok(f >= 0.6 && f <= 1.4, `factor ${f}`);
      assert.ok(j.hue >= -0.1 && j.hue <= 0.1, `hue ${j.hue}`);
    }
    assert.equal(orders.size, 24, "all 24 orders occur");
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    assert.ok(Math.abs(mean(jittered.map((p) => p.jitter!.brightness)) - 1) < 0.01);
    assert.ok(Math.abs(mean(jittered.map((p) => p.jitter!.hue))) < 0.003);
    const gray = params.filter((p) => p.grayscale).length / params.length;
    assert.ok(Math.abs(gray - 0.2) < 0.02, `grayscale rate ${gray}`);
    // Strong jitter (ImageNet): brightness can reach 0.2 … 1.8, and 1 − 0.8 is not clipped below 0.
    const strong = new Augmentation(simclrImagenet(32)).sample(new Rng(2), 5000, 32, 32).filter((p) => p.jitter);
    const bs = strong.map((p) => p.jitter!.brightness);
    assert.ok(Math.min(...bs) >= 0.2 && Math.min(...bs) < 0.25 && Math.max(...bs) <= 1.8 && Math.max(...bs) > 1.75);
  });

  test("brightness scales each image by its factor (clamped to [0, 1])", () => {
    const aug = new Augmentation({
      size: 16,
      colorJitter: { brightness: 0.5, contrast: 0, saturation: 0, hue: 0, p: 1 },
    });
    const x = rand([64, 3, 16, 16], { generator: new Generator(5) }).mul(0.6);
    const { output, params } = aug.run(x, new Rng(4));
    const xs = x.data() as Float32Array;
    const ys = output.data() as Float32Array;
    const per = 3 * 256;
    params.forEach((p, b) => {
      const f = p.jitter!.brightness;
      assert.ok(f >= 0.5 && f <= 1.5);
      for (let i = b * per; i < (b + 1) * per; i += 37) {
        assert.ok(Math.abs(ys[i] - Math.min(1, xs[i] * f)) < 1e-6, `image ${b}: ${ys[i]} vs ${xs[i]} * ${f}`);
      }
    });
    x.dispose();
    output.dispose();
  });

  test("contrast keeps each image's mean luma; saturation 0 gives gray; outputs stay in [0, 1]", () => {
    // Values in [0.4, 0.6]: contrast factors up to 1.9 around a mean luma near 0.5 never clip.
    const x = rand([32, 3, 8, 8], { generator: new Generator(6) })
      .mul(0.2)
      .add(0.4);
    const jitter = { brightness: 0, contrast: 0, saturation: 0, hue: 0, p: 1 };
    const contrast = new Augmentation({ size: 8, colorJitter: { ...jitter, contrast: 0.9 } });
    const params = contrast.sample(new Rng(1), 32, 8, 8);
    const y = contrast.apply(x, params);
    scope(() => {
      const luma = (t: Tensor) =>
        t.select(1, 0).mul(0.2989).add(t.select(1, 1).mul(0.587)).add(t.select(1, 2).mul(0.114)).mean([1, 2]);
      assert.ok(luma(y).allclose(luma(x), 1e-4, 1e-5));
      assert.ok(!y.equal(x));
    });
    const desaturate = new Augmentation({ size: 8, colorJitter: { ...jitter, saturation: 1 } });
    const p0 = desaturate.sample(new Rng(1), 32, 8, 8).map((p) => ({ ...p, jitter: { ...p.jitter!, saturation: 0 } }));
    const g = desaturate.apply(x, p0);
    scope(() => {
      assert.ok(g.select(1, 0).allclose(g.select(1, 1), 0, 1e-6) && g.select(1, 1).allclose(g.select(1, 2), 0, 1e-6));
    });
    for (const t of [x, y, g]) t.dispose();
  });

  test("grayscale output has equal channels; one-channel images pass through colour ops", () => {
    const x = rand([10, 3, 8, 8], { generator: new Generator(8) });
    const aug = new Augmentation({ size: 8, grayscale: 1 });
    const y = aug.run(x, new Rng(0)).output;
    scope(() => {
      assert.ok(y.select(1, 0).equal(y.select(1, 1)) && y.select(1, 1).equal(y.select(1, 2)));
      const expected = x.select(1, 0).mul(0.2989).add(x.select(1, 1).mul(0.587)).add(x.select(1, 2).mul(0.114));
      assert.ok(y.select(1, 0).allclose(expected, 1e-5, 1e-6));
    });
    const mono = rand([10, 1, 8, 8], { generator: new Generator(9) });
    const g = new Augmentation({
      size: 8,
      colorJitter: { brightness: 0, contrast: 0, saturation: 0.9, hue: 0.4, p: 1 },
      grayscale: 1,
    });
    const z = g.run(mono, new Rng(0)).output;
    assert.ok(z.equal(mono));
    for (const t of [x, y, mono, z]) t.dispose();
  });

  test("Gaussian blur: sigma within range, mass preserved, smoother", () => {
    const aug = new Augmentation({ size: 32, blur: { p: 0.5, sigma: [0.1, 2.0] } });
    assert.equal(aug.blurKernelSize, 3);
    assert.equal(new Augmentation(simclrImagenet()).blurKernelSize, 23);
    assert.equal(new Augmentation(simclrImagenet(96)).blurKernelSize, 9);
    const params = aug.sample(new Rng(5), 4000, 32, 32);
    const sigmas = params.filter((p) => p.blurSigma !== null).map((p) => p.blurSigma!);
    assert.ok(Math.abs(sigmas.length / params.length - 0.5) < 0.03);
    assert.ok(sigmas.every((s) => s >= 0.1 && s <= 2.0));
    const wide = new Augmentation({ size: 32, blur: { p: 1, sigma: [2, 2], kernelSize: 9 } });
    const x = rand([4, 3, 32, 32], { generator: new Generator(10) });
    const y = wide.run(x, new Rng(0)).output;
    scope(() => {
      assert.ok(Math.abs(y.mean().item() - x.mean().item()) < 0.01);
      const roughness = (t: Tensor) =>
        t
          .narrow(3, 1, 31)
          .sub(t.narrow(3, 0, 31))
          .abs()
          .mean()
          .item();
      assert.ok(roughness(y) < 0.5 * roughness(x));
    });
    for (const t of [x, y]) t.dispose();
  });

  test("normalisation", () => {
    const x = rand([2, 3, 4, 4], { generator: new Generator(12) });
    const aug = new Augmentation({ size: 4, normalize: { mean: [0.1, 0.2, 0.3], std: [0.5, 0.25, 2] } });
    const y = aug.run(x, new Rng(0)).output;
    scope(() => {
      const mean = fromTypedArray(Float32Array.of(0.1, 0.2, 0.3), [1, 3, 1, 1]);
      const std = fromTypedArray(Float32Array.of(0.5, 0.25, 2), [1, 3, 1, 1]);
      assert.ok(y.allclose(x.sub(mean).div(std), 1e-6, 1e-6));
    });
    assert.throws(
      () => new Augmentation({ size: 4, normalize: { mean: [0.5], std: [0.5] } }).run(x, new Rng(0)),
      /normalize has 1 channels, the images have 3/,
    );
    x.dispose();
    y.dispose();
  });
});

describe("determinism and presets", () => {
  test("identical seeds give identical outputs, different seeds different ones; no tensor leaks", () => {
    const x = rand([16, 3, 32, 32], { generator: new Generator(13) });
    const aug = new Augmentation(simclrImagenet(32));
    const before = liveTensors();
    const a = aug.run(x, new Rng(42)).output;
    const b = aug.run(x, new Rng(42)).output;
    const c = aug.run(x, new Rng(43)).output;
    assert.equal(liveTensors(), before + 3);
    assert.ok(a.equal(b), "same seed, same output");
    assert.ok(!a.equal(c), "different seed, different output");
    // Seed tuples: the loader's (seed, epoch, batch, view) streams are independent.
    assert.notEqual(new Rng(1, 0, 1).nextUint32(), new Rng(1, 1, 0).nextUint32());
    const r = new Rng(5);
    r.random();
    const state = r.getState();
    const expected = [r.random(), r.random()];
    assert.deepEqual(
      [new Rng(0).setState(state).random(), new Rng(0).setState(state).random()],
      [expected[0], expected[0]],
    );
    for (const t of [x, a, b, c]) t.dispose();
  });

  test("augmented a few images at a time (as the loader does), a batch comes out as in one call", () => {
    // Every op acts on each image alone, so chunks change the memory held, not the numbers.
    assert.equal(augmentChunkImages(3, 224 * 224, 224 * 224), 1);
    assert.equal(augmentChunkImages(3, 96 * 96, 96 * 96), 9);
    assert.equal(augmentChunkImages(1, 28 * 28, 28 * 28), 334);
    const pixels = Uint8Array.from({ length: 10 * 3 * 40 * 40 }, (_, i) => (i * 2654435761) >>> 24);
    const before = liveTensors();
    for (const config of [simclrImagenet(24), simclrCifar(32)]) {
      const aug = new Augmentation(config);
      const params = aug.sample(new Rng(9), 10, 40, 40);
      const whole = scope(() => aug.apply(fromTypedArray(pixels, [10, 3, 40, 40]), params).data() as Float32Array);
      const size = 3 * 40 * 40;
      for (const chunk of [1, 3, 10]) {
        const chunked = augmentInChunks(
          aug,
          params,
          { channels: 3, height: 40, width: 40 },
          (s, count) => fromTypedArray(pixels.subarray(s * size, (s + count) * size), [count, 3, 40, 40]),
          chunk,
        );
        assert.equal(chunked.length, whole.length);
        let worst = 0;
        for (let i = 0; i < whole.length; i++) worst = Math.max(worst, Math.abs(chunked[i] - whole[i]));
        assert.ok(worst <= 1e-6, `${JSON.stringify(config.size)} in chunks of ${chunk}: max difference ${worst}`);
      }
    }
    // At most as many as before: tensors of earlier tests that the garbage collector finalizes
    // meanwhile may lower the count, a chunk's tensors left alive would raise it.
    assert.ok(liveTensors() <= before, `each chunk's tensors are freed (${liveTensors()} live, ${before} before)`);
  });

  test("uint8 input is scaled to [0, 1]", () => {
    const u8 = fromTypedArray(
      Uint8Array.from({ length: 2 * 1 * 4 * 4 }, (_, i) => i * 8),
      [2, 1, 4, 4],
    );
    const y = new Augmentation({ size: 4 }).run(u8, new Rng(0)).output;
    assert.equal(y.dtype, "float32");
    assert.ok(Math.abs(y.max().item() - 248 / 255) < 1e-6);
    u8.dispose();
    y.dispose();
  });

  test("presets carry the published parameters", () => {
    const cifar = simclrCifar();
    assert.deepEqual(cifar.crop, { scale: [0.08, 1], ratio: [3 / 4, 4 / 3] });
    assert.equal(cifar.hflip, 0.5);
    assert.deepEqual(cifar.colorJitter, { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8 });
    assert.equal(cifar.grayscale, 0.2);
    assert.equal(cifar.blur, null);
    assert.equal(cifar.size, 32);
    const imagenet = simclrImagenet();
    assert.equal(imagenet.size, 224);
    assert.deepEqual(imagenet.colorJitter, { brightness: 0.8, contrast: 0.8, saturation: 0.8, hue: 0.2, p: 0.8 });
    assert.deepEqual(imagenet.blur, { p: 0.5, sigma: [0.1, 2.0] });
    const mono = grayscale();
    assert.equal(mono.size, 28);
    assert.deepEqual(mono.colorJitter, { brightness: 0.4, contrast: 0.4, saturation: 0, hue: 0, p: 0.8 });
    assert.equal(grayscale(28, { hflip: 0 }).hflip, 0);
    assert.deepEqual(presetByName("simclrCifar", 32), cifar);
    assert.throws(() => presetByName("byol" as "simclrCifar"), /preset must be/);
  });

  test("invalid configs are rejected naming the field", () => {
    const bad: [AugmentConfig, RegExp][] = [
      [{ size: 0 }, /size must be a positive integer/],
      [{ size: 8, crop: { scale: [0.5, 0.2] } }, /crop.scale must satisfy/],
      [{ size: 8, crop: { scale: [0.1, 1.5] } }, /crop.scale/],
      [{ size: 8, hflip: 1.5 }, /hflip must be a probability/],
      [
        { size: 8, colorJitter: { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.7, p: 0.8 } },
        /colorJitter.hue must be a number in \[0, 0.5\]/,
      ],
      [{ size: 8, blur: { p: 0.5, sigma: [0.1, 2], kernelSize: 4 } }, /blur.kernelSize must be an odd/],
      [{ size: 8, normalize: { mean: [0.5], std: [0] } }, /normalize.std must be positive/],
    ];
    for (const [config, message] of bad) assert.throws(() => new Augmentation(config), message);
  });
});

// ---- torchvision oracle ---------------------------------------------------------------------------

const PYTHON = "/usr/bin/python3";
const ORACLE = String.raw`
import json, sys, torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode
torch.set_num_threads(1)
def case(d):
  meta = json.load(open(d + "/params.json"))
  n, c, h, w = meta["shape"]
  x = torch.frombuffer(bytearray(open(d + "/x.bin", "rb").read()), dtype=torch.float32).reshape(n, c, h, w)
  outs = []
  for i, p in enumerate(meta["params"]):
      img = x[i]
      b = p["crop"]
      img = TF.resized_crop(img, b["top"], b["left"], b["height"], b["width"], meta["size"],
                            interpolation=InterpolationMode.BILINEAR, antialias=False)
      if p["flip"]:
          img = TF.hflip(img)
      j = p["jitter"]
      if j is not None:
          for op in j["order"]:
              if op == 0 and j["brightness"] != 1: img = TF.adjust_brightness(img, j["brightness"])
              if op == 1 and j["contrast"] != 1: img = TF.adjust_contrast(img, j["contrast"])
              if op == 2 and j["saturation"] != 1: img = TF.adjust_saturation(img, j["saturation"])
              if op == 3 and j["hue"] != 0: img = TF.adjust_hue(img, j["hue"])
      if p["grayscale"] and c == 3:
          img = TF.rgb_to_grayscale(img, num_output_channels=3)
      if p["blurSigma"] is not None:
          k = meta["kernel"]
          img = TF.gaussian_blur(img, [k, k], [p["blurSigma"], p["blurSigma"]])
      if meta["normalize"] is not None:
          img = TF.normalize(img, meta["normalize"]["mean"], meta["normalize"]["std"])
      outs.append(img)
  open(d + "/y.bin", "wb").write(torch.stack(outs).contiguous().numpy().tobytes())
for d in sys.argv[1:]:
  case(d)
`;

let oracleOk: boolean | undefined;
function oracleAvailable(): boolean {
  if (oracleOk === undefined) {
    const r = spawnSync(PYTHON, ["-c", "import torch, torchvision"], { encoding: "utf8", timeout: 60_000 });
    oracleOk = r.status === 0;
  }
  return oracleOk;
}

interface OracleCase {
  x: Tensor;
  aug: Augmentation;
  params: SampleParams[];
}

/** Runs torchvision on every case in one Python process (importing torch takes seconds). */
function torchvisionReference(cases: OracleCase[]): Float32Array[] {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "loco-augment-"));
  try {
    const dirs = cases.map(({ x, aug, params }, i) => {
      const dir = path.join(root, String(i));
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, "x.bin"), x.data() as Float32Array);
      const meta = {
        shape: x.shape,
        size: [aug.outHeight, aug.outWidth],
        kernel: aug.blurKernelSize,
        normalize: aug.config.normalize ?? null,
        params,
      };
      fs.writeFileSync(path.join(dir, "params.json"), JSON.stringify(meta));
      return dir;
    });
    fs.writeFileSync(path.join(root, "oracle.py"), ORACLE);
    const r = spawnSync(PYTHON, [path.join(root, "oracle.py"), ...dirs], {
      encoding: "utf8",
      timeout: 180_000,
      env: { ...process.env, OMP_NUM_THREADS: "1", PYTHONDONTWRITEBYTECODE: "1", PYTHONWARNINGS: "ignore" },
    });
    if (r.status !== 0) throw new Error(`torchvision oracle failed: ${r.stderr}`);
    return dirs.map((dir) => {
      const bytes = fs.readFileSync(path.join(dir, "y.bin"));
      return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    });
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

describe("agreement with torchvision 0.14", () => {
  const cases: [string, AugmentConfig, number[]][] = [
    ["simclrCifar on 32x32", simclrCifar(32), [24, 3, 32, 32]],
    ["simclrImagenet at 48 from 40x44 (blur, upscaling)", simclrImagenet(48), [16, 3, 40, 44]],
    ["grayscale preset on 28x28", grayscale(28, { normalize: { mean: [0.3], std: [0.35] } }), [16, 1, 28, 28]],
    ["downscaling crops to 16 from 48x48", { ...simclrCifar(16), crop: { scale: [0.5, 1] } }, [12, 3, 48, 48]],
  ];
  let refs: Float32Array[] = [];
  const ours: Float32Array[] = [];
  before(() => {
    if (!oracleAvailable()) return;
    const prepared = cases.map(([, config, shape]) => {
      const x = rand(shape, { generator: new Generator(shape[0] * 7 + shape[2]) });
      const aug = new Augmentation(config);
      const { output, params } = aug.run(x, new Rng(shape[2]));
      ours.push(output.data() as Float32Array);
      output.dispose();
      return { x, aug, params };
    });
    refs = torchvisionReference(prepared);
    for (const p of prepared) p.x.dispose();
  });
  cases.forEach(([name], k) => {
    test(name, (t) => {
      if (!oracleAvailable()) return t.skip("PyTorch/torchvision not installed for /usr/bin/python3");
      const mine = ours[k];
      const ref = refs[k];
      assert.equal(mine.length, ref.length);
      // Hue goes through floor(6h): a pixel whose hue sits on a sector boundary may land in the
      // neighbouring sector in either implementation (both are right up to float rounding).
      let worst = 0;
      let outliers = 0;
      for (let i = 0; i < mine.length; i++) {
        const d = Math.abs(mine[i] - ref[i]);
        if (d > 1e-4) outliers++;
        worst = Math.max(worst, d);
      }
      if (process.env.LOCO_TEST_VERBOSE) console.log(`${name}: worst |diff| ${worst}, ${outliers} above 1e-4`);
      assert.ok(
        outliers <= mine.length * 1e-4,
        `${outliers} of ${mine.length} values differ by more than 1e-4 (worst ${worst})`,
      );
    });
  });
});
