// `loco report` end to end: real tiny runs (two seeds of SimCLR, one LoCo run with feedback
// alignment) gathered into an experiment directory, the report written by the CLI, then opened in
// headless Chromium: every chart must have drawn data marks, and the page must log no error and
// request nothing (it is self-contained). Also checks metrics.csv against metrics.jsonl.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { measureMethodMemory } from "../src/learning/memory";
import { readRun } from "../src/report/rundata";
import { readMetrics } from "../src/learning/metrics";
import { formatPercent, stat } from "../src/report/summary";
import { csvField, metricsCsv } from "../src/learning/metrics-csv";
import { loadLatestCheckpoint } from "../src/learning/checkpoint";
import { Conv2d, Linear } from "../src/nn";
import { ResNet } from "../src/models/resnet";
import { haveFashionMnist, loco, makeTinyFashionMnist, show, tinyFlags } from "./helpers/runs";
import { checkPages, chromiumAvailable } from "./helpers/browser";

const skip = !haveFashionMnist
  ? "the Fashion-MNIST files are not installed"
  : !chromiumAvailable()
    ? "chromium is not installed (apt-get install chromium)"
    : false;

const RUNS: { row: string; seed: number; dir: string; flags: Record<string, string | number> }[] = [
  { row: "SimCLR", seed: 0, dir: "runs/simclr-s0", flags: { method: "simclr", seed: 0 } },
  { row: "SimCLR", seed: 1, dir: "runs/simclr-s1", flags: { method: "simclr", seed: 1 } },
  {
    row: "LoCo, feedback alignment",
    seed: 0,
    dir: "runs/loco-fa-s0",
    flags: { method: "loco", feedback: "alignment", seed: 0 },
  },
];

/** Splits one CSV line (the writer quotes only JSON cells, which these checks do not read). */
const cells = (line: string): string[] => line.split(",");

test("metricsCsv: losses by stage, nested fields dotted, non-finite cells empty, text quoted", () => {
  const csv = metricsCsv(
    [
      { type: "step", step: 10, loss: [1.5, NaN] },
      { type: "results", linear: { top1: 0.5 }, perStage: [{ stage: 1 }], note: 'a "b", c' },
    ],
    [2, 4],
  );
  const [header, step, results] = csv.trimEnd().split("\n");
  assert.equal(header, "type,step,loss_stage2,loss_stage4,linear.top1,perStage,note");
  assert.equal(step, "step,10,1.5,,,,");
  assert.equal(results, 'results,,,,0.5,"[{""stage"":1}]","a ""b"", c"');
  assert.equal(csvField(Infinity), "");
});

test("stat: mean and sample standard deviation; one value has std 0", () => {
  const s = stat([0.5, 0.7])!;
  assert.equal(s.n, 2);
  assert.ok(Math.abs(s.mean - 0.6) < 1e-12 && Math.abs(s.std - Math.sqrt(0.02)) < 1e-12, JSON.stringify(s));
  assert.deepEqual(stat([0.4, null, NaN]), { mean: 0.4, std: 0, n: 1 });
  assert.equal(stat([]), null);
  assert.equal(formatPercent(stat([0.5, 0.7])), "60.00 ± 14.14");
});

describe("loco report", { skip }, () => {
  let root = "";
  let exp = "";
  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), "loco-report-"));
    const data = makeTinyFashionMnist(path.join(root, "fm"), 512, 256);
    exp = path.join(root, "exp");
    for (const r of RUNS) {
      const run = await loco([
        "train",
        ...tinyFlags(data, {
          ...r.flags,
          epochs: 2,
          "knn-every": 1,
          "knn-train-size": 256,
          "knn-test-size": 128,
          baselines: "random-init,raw-pixels",
          "run-dir": path.join(exp, r.dir),
        }),
        "--per-stage",
      ]);
      assert.equal(run.status, 0, show(run));
      // Peak step memory of the run's configuration, as `loco experiment` records it.
      const config = readRun(path.join(exp, r.dir)).config!;
      const m = measureMethodMemory(config.method, {
        depth: config.encoder.depth,
        stem: config.encoder.stem,
        width: config.encoder.width,
        inChannels: 1,
        imageSize: 28,
        batchSize: config.batchSize,
        overrides: config.learning,
      });
      fs.writeFileSync(path.join(exp, r.dir, "memory.json"), JSON.stringify(m));
    }
    const entries = RUNS.map(({ row, seed, dir }) => ({ row, seed, dir }));
    fs.writeFileSync(path.join(exp, "experiment.json"), JSON.stringify({ name: "report-test", runs: entries }));
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  test("metrics.csv holds every metrics.jsonl record, losses as loss_stage columns", () => {
    for (const r of RUNS) {
      const dir = path.join(exp, r.dir);
      const records = readMetrics(path.join(dir, "metrics.jsonl"));
      const lines = fs.readFileSync(path.join(dir, "metrics.csv"), "utf8").trimEnd().split("\n");
      assert.equal(lines.length, records.length + 1, "a header and one line per record");
      const header = cells(lines[0]);
      const stages = r.flags.method === "simclr" ? [4] : [1, 2, 3, 4];
      for (const s of stages) assert.ok(header.includes(`loss_stage${s}`), `${r.dir}: column loss_stage${s}`);
      records.forEach((rec, i) => {
        const row = cells(lines[i + 1]);
        assert.equal(row[header.indexOf("type")], rec.type);
        if (rec.type === "step") {
          assert.equal(Number(row[header.indexOf("step")]), rec.step);
          const loss = rec.loss;
          stages.forEach((s, k) => assert.equal(Number(row[header.indexOf(`loss_stage${s}`)]), loss[k]));
        }
      });
    }
  });

  test("a feedback-alignment run saves one feedback matrix per conv and linear layer in its checkpoint", () => {
    const checkpoint = loadLatestCheckpoint(path.join(exp, RUNS[2].dir))!;
    const keys = [...checkpoint.model.keys()];
    const encoderFeedback = keys.filter((k) => k.startsWith("encoder.") && k.endsWith(".feedback_weight"));
    const reference = new ResNet({ depth: 18, width: 4, stem: "cifar", inChannels: 1, numClasses: 0 });
    const convs = reference.modules().filter((m) => m instanceof Conv2d || m instanceof Linear).length;
    reference.dispose();
    assert.equal(encoderFeedback.length, convs, "every encoder conv has its matrix");
    assert.ok(
      keys.some((k) => k.startsWith("decoders.") && k.endsWith(".feedback_weight")),
      "decoders too",
    );
    for (const k of encoderFeedback) {
      const b = checkpoint.model.get(k)!;
      const w = checkpoint.model.get(k.replace(/feedback_weight$/, "weight"))!;
      assert.deepEqual(b.shape, w.shape, k);
    }
    for (const t of [...checkpoint.model.values(), ...checkpoint.optimizer.values()]) t.release();
    // The SimCLR runs trained with backprop carry none.
    const plain = loadLatestCheckpoint(path.join(exp, RUNS[0].dir))!;
    assert.ok(![...plain.model.keys()].some((k) => k.endsWith("feedback_weight")));
    for (const t of [...plain.model.values(), ...plain.optimizer.values()]) t.release();
  });

  test("an experiment's report and a run's report draw every chart in Chromium without errors", async () => {
    const run = await loco(["report", exp]);
    assert.equal(run.status, 0, show(run));
    const html = path.join(exp, "report.html");
    const names = ["loss", "knn", "readout", "per-stage", "memory", "time"];
    for (const n of names) assert.ok(fs.existsSync(path.join(exp, "charts", `${n}.svg`)), `charts/${n}.svg`);
    // A single run gets the same report (written elsewhere with --out).
    const single = path.join(root, "single");
    const runReport = await loco(["report", path.join(exp, RUNS[2].dir), "--out", single]);
    assert.equal(runReport.status, 0, show(runReport));
    const [page, singlePage] = await checkPages([
      { html, screenshot: process.env.LOCO_REPORT_SCREENSHOT },
      { html: path.join(single, "report.html") },
    ]);
    assert.deepEqual(Object.keys(page.marks).sort(), [...names].sort());
    for (const [name, count] of Object.entries(page.marks)) assert.ok(count > 0, `chart ${name} drew no marks`);
    assert.deepEqual(page.errors, []);
    assert.deepEqual(page.requests, [], "the report must not load anything");
    // The table's SimCLR row is the mean ± std of the two seeds' results.
    const linear = RUNS.filter((r) => r.row === "SimCLR").map(
      (r) => readRun(path.join(exp, r.dir)).results!.linear!.top1,
    );
    const text = fs.readFileSync(html, "utf8");
    assert.ok(text.includes(formatPercent(stat(linear))), `the table shows ${formatPercent(stat(linear))}`);
    assert.ok(text.includes("±"));

    assert.ok(Object.keys(singlePage.marks).length >= 5, JSON.stringify(singlePage.marks));
    for (const [name, count] of Object.entries(singlePage.marks))
      assert.ok(count > 0, `run chart ${name} drew no marks`);
    assert.deepEqual(singlePage.errors, []);
  });

  test("a directory that is neither a run nor an experiment is a usage error", async () => {
    const run = await loco(["report", root]);
    assert.equal(run.status, 2, show(run));
    assert.match(run.stderr, /not a loco run directory/);
    assert.doesNotMatch(run.stderr, /\n\s+at /, "no stack trace");
  });
});
