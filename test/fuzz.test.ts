// Fuzz test of the option parser, the option resolution, config files and the pre-run checks of a
// resume (docs/reliability.md): seeded random flag/value/config combinations must end in a
// user-facing error (UsageError, TrainingError) or valid options, never a TypeError, RangeError or
// the like; and a few `loco train` child processes with random bad options must exit 0, 1 or 2
// without a stack trace and leave no run directory that blocks a retry.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { camelCase, parseArgs, UsageError, withFlagNames } from "../src/cli/options";
import { trainSpecs } from "../src/cli/train";
import { type TrainInput, resolveTrainOptions } from "../src/learning/options";
import { readRunConfig, resumeOptions, runConfigJson } from "../src/learning/runs";
import { checkpointsOf, haveFashionMnist, loco, makeTinyFashionMnist, show, tinyFlags } from "./helpers/runs";

/** mulberry32: a small seeded generator, so that a failure replays. */
function generator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = [
  "",
  " ",
  "0",
  "-1",
  "1",
  "2",
  "9",
  "x",
  "1e309",
  "-1e309",
  "NaN",
  "Infinity",
  "1.5",
  "2,2",
  "1,2,3,4",
  "1,2,3,4,5",
  "0.1,0.2",
  "true",
  "false",
  "none",
  "null",
  "[]",
  "{}",
  "99999999999999999999",
  "-0",
  "0x10",
  "1,,2",
  "simclr",
  "loco",
  "gim",
  "lars",
  "adam",
  "sgd",
  "cifar10",
  "folder",
  "linear",
  "skip",
  "random-init,raw-pixels",
  "resnet50",
  "imagenet",
  "sequential",
  "/proc/x",
  "/dev/null/x",
];
const JSON_VALUES: unknown[] = [
  0,
  -1,
  1,
  2,
  9,
  0.5,
  Number.MAX_VALUE,
  -0,
  "x",
  "",
  "many",
  true,
  false,
  null,
  [],
  [2, 2],
  [0],
  [1, 2, 3, 4, 5],
  {},
  { a: 1 },
  ["1"],
  "1,2",
  1e-320,
];

const userFacing = (e: unknown): boolean =>
  e instanceof UsageError || (e as { userFacing?: unknown }).userFacing === true;

let tmp = "";
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loco-fuzz-"));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("fuzz: flags, config files and resume in-process", () => {
  test("3000 seeded random combinations end in valid options or a user-facing error", () => {
    const random = generator(20201206);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)];
    const fields = [...trainSpecs.map((s) => camelCase(s.flag)), "resolved", "bogus", "epoch"];
    // A run directory holding a valid config.json (never trained): resume is checked against it.
    const runDir = path.join(tmp, "run");
    fs.mkdirSync(runDir);
    const input: TrainInput = { epochs: 1, batchSize: 64, width: 4 };
    const good = runConfigJson(input, resolveTrainOptions(input));
    const unexpected: string[] = [];
    for (let i = 0; i < 3000; i++) {
      const argv: string[] = [];
      for (let k = Math.floor(random() * 5); k > 0; k--) {
        const spec = pick(trainSpecs);
        const r = random();
        if (r < 0.05) argv.push(pick(WORDS));
        else if (r < 0.1) argv.push(`--${spec.flag}`);
        else if (r < 0.2) argv.push(`--${spec.flag}=${pick(WORDS)}`);
        else argv.push(`--${pick(["no-", ""])}${spec.flag}`, pick(WORDS));
      }
      const kind = random();
      const config: Record<string, unknown> = kind < 0.3 ? {} : structuredClone(good);
      for (let k = Math.floor(random() * 3); k > 0; k--) config[pick(fields)] = pick(JSON_VALUES);
      if (random() < 0.2) delete config[pick(Object.keys(config).concat("resolved"))];
      if (kind >= 0.3 && typeof config.resolved === "object" && config.resolved !== null && random() < 0.5)
        (config.resolved as Record<string, unknown>)[pick(Object.keys(good.resolved as object))] = pick(JSON_VALUES);
      const file = path.join(tmp, `config-${i % 7}.json`);
      fs.writeFileSync(file, JSON.stringify(config));
      try {
        if (kind < 0.3) {
          const parsed = parseArgs([...argv, "--config", file], trainSpecs, "train", {
            ignoreConfigFields: ["resolved"],
          });
          withFlagNames(() => resolveTrainOptions(parsed.values as TrainInput));
        } else if (kind < 0.65) {
          fs.writeFileSync(path.join(runDir, "config.json"), JSON.stringify(config));
          readRunConfig(runDir);
        } else {
          fs.writeFileSync(path.join(runDir, "config.json"), JSON.stringify(config));
          const parsed = parseArgs(argv, trainSpecs, "train");
          const given = Object.fromEntries([...parsed.given].map((k) => [k, parsed.values[k]]));
          resumeOptions({ ...(given as TrainInput), resume: runDir });
        }
      } catch (error) {
        if (!userFacing(error)) {
          unexpected.push(
            `#${i} ${argv.join(" ")} ${JSON.stringify(config).slice(0, 300)}: ${(error as Error).stack?.split("\n").slice(0, 3).join(" | ")}`,
          );
        }
      }
    }
    assert.deepEqual(unexpected.slice(0, 8), []);
  });
});

describe("fuzz: loco train child processes", { skip: haveFashionMnist ? false : "needs Fashion-MNIST" }, () => {
  test("12 random bad options: exit 0, 1 or 2, no stack trace, no run directory that blocks a retry", async () => {
    const data = makeTinyFashionMnist(path.join(tmp, "data"));
    const random = generator(7);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)];
    const runs = [];
    for (let i = 0; i < 12; i++) {
      const spec = pick(trainSpecs.filter((s) => !["resume", "run-dir", "data-dir", "config"].includes(s.flag)));
      const extra = [`--${spec.flag}`, pick(WORDS.filter((w) => !w.startsWith("/")))];
      const dir = path.join(tmp, `child-${i}`);
      runs.push(
        loco(["train", ...tinyFlags(data, { epochs: 1, "readout-train-size": 64 }), ...extra, "--run-dir", dir]).then(
          (r) => ({ r, dir, extra }),
        ),
      );
      if (runs.length === 2) await Promise.all(runs.splice(0)).then(check);
    }
    await Promise.all(runs).then(check);
    function check(done: { r: Awaited<ReturnType<typeof loco>>; dir: string; extra: string[] }[]): void {
      for (const { r, dir, extra } of done) {
        const what = `${extra.join(" ")}: ${show(r)}`;
        assert.ok([0, 1, 2].includes(r.status!), what);
        assert.doesNotMatch(r.stderr, /\n\s+at .*\.js:\d+/, what);
        const blocks = r.status !== 0 && fs.existsSync(path.join(dir, "config.json")) && checkpointsOf(dir).length > 0;
        assert.ok(!blocks, `a failed run left a run with checkpoints in ${dir}: ${what}`);
      }
    }
  });
});
