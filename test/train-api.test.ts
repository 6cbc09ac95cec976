// The trainer through its library API, in this process: any StagedEncoder through an encoder
// factory, readout "none" and no kNN monitor, the sequential schedule's log of what each phase
// trains, a run's config.json read back as a config file reproducing its options, loco --version.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Generator } from "../src/torch/random";
import { Module } from "../src/nn/module";
import { Sequential } from "../src/nn/container";
import { Conv2d, ReLU } from "../src/nn/layers";
import { BatchNorm2d } from "../src/nn/batchnorm";
import type { Tensor } from "../src/torch";
import { type TrainHooks, train } from "../src/learning/trainer";
import { resolveTrainOptions } from "../src/learning/options";
import { OVERLAP_MODES } from "../src/learning/router";
import { readMetrics } from "../src/learning/metrics";
import { evaluateRun } from "../src/learning/evaluate";
import type { RunEncoder } from "../src/learning/encoders";
import { trainSpecs } from "../src/cli/train";
import { parseArgs } from "../src/cli/options";
import { Progress } from "../src/learning/progress";
import { ENV, MAIN, haveFashionMnist, makeTinyFashionMnist, tinyInput } from "./helpers/runs";

const skip = haveFashionMnist ? false : "Fashion-MNIST is not installed at /usr/share/datasets/fashion-mnist";

/** A two-stage convolutional encoder that is not a ResNet. */
class TwoStageEncoder extends Module {
  readonly #stages: Module[];
  constructor(inChannels: number, seed: number) {
    super();
    const g = new Generator(seed);
    const stage = (i: number, o: number, stride: number): Sequential =>
      new Sequential(
        new Conv2d(i, o, 3, { padding: 1, stride, bias: false, generator: g }),
        new BatchNorm2d(o),
        new ReLU(),
      );
    this.#stages = [
      this.registerModule("stage1", stage(inChannels, 4, 1)),
      this.registerModule("stage2", stage(4, 8, 2)),
    ];
  }
  blocks(): Module[] {
    return this.#stages;
  }
  blockChannels(): number[] {
    return [4, 8];
  }
  blockNames(): string[] {
    return ["stage1", "stage2"];
  }
  naturalSplit(): number[] {
    return [1];
  }
  override forward(x: Tensor): Tensor {
    return this.#stages[1].forward(this.#stages[0].forward(x));
  }
}

describe("train() as a library", { skip }, () => {
  let tmp = "";
  let data = "";
  const logs: string[] = [];
  const sink = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;
  const hooks = (): TrainHooks => ({ log: (m) => logs.push(m), progress: new Progress(sink) });
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loco-train-api-"));
    data = makeTinyFashionMnist(path.join(tmp, "data"), 256, 128);
  });
  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  test("an encoder factory trains any StagedEncoder (here two plain conv stages) and reads it out", async () => {
    let built = 0;
    const encoderFactory = ({ inChannels, seed }: { inChannels: number; seed: number }): RunEncoder => {
      built++;
      return new TwoStageEncoder(inChannels, seed);
    };
    const dir = path.join(tmp, "custom");
    const outcome = await train(
      tinyInput(data, {
        method: "gim",
        lossStages: [1, 2],
        epochs: 1,
        runDir: dir,
        baselines: "random-init",
        encoderFactory,
      }),
      hooks(),
    );
    const results = outcome.results!;
    assert.equal(results.encoder, "custom");
    assert.equal(results.training.finalLoss.length, 2, "one loss per stage of the custom encoder");
    assert.ok(results.training.finalLoss.every((l) => Number.isFinite(l) && l > 0));
    assert.ok(results.linear!.top1! > 0 && results.linear!.top1! <= 1);
    assert.ok(results.baselines!.randomInit !== undefined);
    assert.equal(built, 2, "the trained encoder and the random-init baseline's");
    assert.match(results.methodSettings, /^gim \(losses 1,2, reach 0, c 0, m 2, t 0\.2, simultaneous\)$/);
  });

  test("readout none and knnEvery 0: training only; results.json and the results record hold the training figures", async () => {
    const dir = path.join(tmp, "no-readout");
    logs.length = 0;
    const outcome = await train(tinyInput(data, { epochs: 1, runDir: dir, readout: "none", knnEvery: 0 }), hooks());
    const results = outcome.results!;
    assert.equal(results.linear, undefined);
    assert.equal(results.training.steps, 4);
    assert.ok(!logs.some((l) => /kNN|readout: the trained/.test(l)), logs.join("\n"));
    const onDisk = JSON.parse(fs.readFileSync(path.join(dir, "results.json"), "utf8"));
    assert.equal(onDisk.training.steps, 4);
    const records = readMetrics(path.join(dir, "metrics.jsonl"));
    assert.deepEqual(
      records.map((r) => r.type),
      ["step", "epoch", "results"],
    );
  });

  test("every --overlap trains LoCo identically through train(): same gradients in the first steps, same losses", async () => {
    const runs: { overlap: string; gradients: number[][]; losses: number[][] }[] = [];
    for (const overlap of OVERLAP_MODES) {
      const dir = path.join(tmp, `overlap-${overlap}`);
      const gradients: number[][] = [];
      await train(tinyInput(data, { method: "loco", epochs: 1, runDir: dir, readout: "none", overlap }), {
        ...hooks(),
        afterBackward: ({ step, parameters }) => {
          if (step <= 3)
            gradients.push(parameters.flatMap(([, p]) => (p.grad === null ? [] : Array.from(p.grad.data(), Number))));
        },
      });
      const losses = readMetrics(path.join(dir, "metrics.jsonl")).flatMap((r) => (r.type === "step" ? [r.loss] : []));
      runs.push({ overlap, gradients, losses });
    }
    assert.equal(runs[0].gradients.length, 3);
    assert.ok(runs[0].gradients[0].length > 0 && runs[0].losses.length > 0);
    for (const run of runs.slice(1)) {
      assert.deepEqual(run.losses, runs[0].losses, `${run.overlap}: losses`);
      for (let step = 0; step < 3; step++)
        assert.ok(
          run.gradients[step].every((g, i) => g === runs[0].gradients[step][i]),
          `${run.overlap}: step ${step + 1}'s gradients equal retain's exactly`,
        );
    }
  });

  test("the sequential schedule says what each phase trains (LoCo's phase 2 trains stages 1-2)", async () => {
    const dir = path.join(tmp, "sequential");
    logs.length = 0;
    await train(
      tinyInput(data, {
        method: "loco",
        schedule: "sequential",
        epochs: 4,
        trainSubset: 128,
        runDir: dir,
        readout: "none",
      }),
      hooks(),
    );
    const phases = logs.filter((l) => l.startsWith("sequential schedule"));
    assert.deepEqual(phases, [
      "sequential schedule: phase 1/4 trains stage 1 and the decoder of stage 1",
      "sequential schedule: phase 2/4 trains stages 1-2 and the decoder of stage 2",
      "sequential schedule: phase 3/4 trains stages 2-3 and the decoder of stage 3; stage 1 frozen",
      "sequential schedule: phase 4/4 trains stages 3-4 and the decoder of stage 4; stages 1-2 frozen",
    ]);
  });

  test("a run's config.json, read back as --config, resolves to the run's options; the readout logs its progress", async () => {
    const dir = path.join(tmp, "config");
    logs.length = 0;
    await train(
      tinyInput(data, { method: "gim", convBlocks: 1, epochs: 1, runDir: dir, readoutTestSize: 64 }),
      hooks(),
    );
    assert.ok(
      logs.some((l) => /^readout: trained: features of 256 train and 64 test images/.test(l)),
      logs.join("\n"),
    );
    const file = path.join(dir, "config.json");
    const saved = JSON.parse(fs.readFileSync(file, "utf8"));
    const parsed = parseArgs(["--config", file, "--run-dir", dir], trainSpecs, "train", {
      ignoreConfigFields: ["resolved"],
    });
    assert.deepEqual(resolveTrainOptions(parsed.values), saved.resolved);
  });

  test("evaluateRun and loco eval read a run's checkpoint out on a smaller test split, with progress lines", async () => {
    const dir = path.join(tmp, "config"); // trained by the test above
    const lines: string[] = [];
    const { evaluation, file } = await evaluateRun(dir, {
      readoutTestSize: 32,
      baselines: ["raw-pixels"],
      log: (m) => lines.push(m),
    });
    assert.equal(file, path.join(dir, "eval-step-4.json"));
    assert.equal(evaluation.readout.testImages, 32);
    assert.match(evaluation.methodSettings, /^gim \(losses 1,2,3,4, reach 0, c 1, m 2/);
    assert.ok(evaluation.baselines.rawPixels !== undefined);
    assert.deepEqual(JSON.parse(fs.readFileSync(file, "utf8")).linear, evaluation.linear);
    assert.ok(
      lines.some((l) => /^readout: raw-pixels: linear \d+\.\d+%/.test(l)),
      lines.join("\n"),
    );
    const cli = spawnSync(
      process.execPath,
      [MAIN, "eval", dir, "--readout-test-size", "32", "--out", path.join(tmp, "eval.json")],
      { env: ENV, encoding: "utf8" },
    );
    assert.equal(cli.status, 0, cli.stderr);
    assert.match(cli.stderr, /readout: trained: features of 256 train and 32 test images/);
    assert.match(cli.stdout, /gim \(losses 1,2,3,4, reach 0, c 1, m 2, t 0\.2, simultaneous\), step 4/);
  });

  test("train() with only method, dataset and epochs resolves every other option to its default", () => {
    const options = resolveTrainOptions({ method: "loco", dataset: "fashion-mnist", epochs: 1 });
    assert.equal(options.pretrainData.dir, "/usr/share/datasets/fashion-mnist");
    assert.deepEqual(options.baselines, ["random-init", "raw-pixels"]);
    assert.equal(options.learning.convBlocks, 1);
    assert.throws(
      () => resolveTrainOptions({ epochs: 0 }),
      (e: unknown) =>
        (e as { exitCode: number }).exitCode === 2 &&
        /^epochs: expected an integer >= 1, got 0$/.test((e as Error).message),
    );
  });

  test("a setting of one parallel mode is refused in another, naming the flag (exit status 2), not ignored", () => {
    const refused = (input: Parameters<typeof resolveTrainOptions>[0], pattern: RegExp) =>
      assert.throws(
        () => resolveTrainOptions(input),
        (e: unknown) => (e as { exitCode: number }).exitCode === 2 && pattern.test((e as Error).message),
      );
    refused({ parallel: "stages", overlap: "recompute-min" }, /^overlap \(--overlap recompute-min\): stage parallel/);
    refused(
      { stageSchedule: "pipelined" },
      /^stageSchedule \(--stage-schedule pipelined\): only with --parallel stages \(this run is one process\)/,
    );
    refused({ parallel: "data", stageSchedule: "pipelined" }, /\(this run is --parallel data\)/);
    assert.equal(resolveTrainOptions({ parallel: "data", overlap: "recompute-min" }).learning.overlap, "recompute-min");
    assert.equal(resolveTrainOptions({ parallel: "stages", stageSchedule: "pipelined" }).stageSchedule, "pipelined");
  });
});

test("loco --version prints package.json's version", () => {
  const r = spawnSync(process.execPath, [MAIN, "--version"], { env: ENV, encoding: "utf8" });
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "package.json"), "utf8"));
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), `loco ${pkg.version} (CPU)`);
});
