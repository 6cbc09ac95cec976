// metrics.jsonl records: written by MetricsWriter, read back and checked by readMetrics.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { MetricsWriter, readMetrics, type StepRecord } from "../src/learning/metrics";

const tmpFile = (): string => path.join(fs.mkdtempSync(path.join(os.tmpdir(), "loco-metrics-")), "metrics.jsonl");

const step: StepRecord = {
  type: "step",
  step: 10,
  epoch: 1,
  lr: 0.5,
  loss: [1.5, NaN],
  imagesPerSecond: 100,
  dataWaitShare: 0.1,
  skippedSteps: 0,
};

test("records round-trip through MetricsWriter and readMetrics (NaN losses included)", () => {
  const file = tmpFile();
  const w = new MetricsWriter(file);
  w.append(step);
  w.append({
    type: "epoch",
    epoch: 1,
    step: 10,
    loss: [1.25, 2],
    knnTop1: null,
    trainSeconds: 3,
    dataWaitShare: 0.1,
    skippedSteps: 0,
  });
  w.append({ type: "resume", step: 10, checkpoint: "c.safetensors" });
  w.append({ type: "restart", step: 0 });
  const records = readMetrics(file);
  assert.deepEqual(
    records.map((r) => r.type),
    ["step", "epoch", "resume", "restart"],
  );
  const first = records[0] as StepRecord;
  assert.equal(first.loss[0], 1.5);
  assert.ok(Number.isNaN(first.loss[1]));
  assert.equal(typeof first.time, "string");
});

test("a torn last line is tolerated; a bad line elsewhere names file:line and the field", () => {
  const file = tmpFile();
  new MetricsWriter(file).append(step);
  fs.appendFileSync(file, '{"type":"step","st');
  assert.equal(readMetrics(file).length, 1);

  const bad = tmpFile();
  fs.writeFileSync(bad, `${JSON.stringify({ ...step, lr: "high" })}\n${JSON.stringify(step)}\n`);
  assert.throws(() => readMetrics(bad), new RegExp(`${bad}:1: field 'lr' of a 'step' record: expected a number`));
  const missing = tmpFile();
  fs.writeFileSync(missing, `${JSON.stringify(step)}\n${JSON.stringify({ type: "resume", step: 3 })}\n`);
  assert.throws(() => readMetrics(missing), new RegExp(`${missing}:2: a 'resume' record lacks the field 'checkpoint'`));
  const unknown = tmpFile();
  fs.writeFileSync(unknown, `${JSON.stringify({ type: "bogus" })}\n`);
  assert.throws(() => readMetrics(unknown), /:1: unknown record type "bogus"/);
  const torn = tmpFile();
  fs.writeFileSync(torn, `{"type":"st\n${JSON.stringify(step)}\n`);
  assert.throws(() => readMetrics(torn), /:1: not valid JSON/);
});
