// Flags as a user types them: a boolean flag takes an explicit true/false as its next argument
// (`--per-stage false` turns it off instead of leaving it on and stranding the word), and an
// argument the command does not take is an error with exit status 2, not silently ignored.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { type OptionSpec, parseArgs } from "../src/cli/options";

const MAIN = path.join(__dirname, "..", "src", "cli", "main.js");
const ENV = { ...process.env, LOCO_NUM_THREADS: "1", OMP_NUM_THREADS: "1" };

const specs: OptionSpec[] = [
  { flag: "per-stage", type: "boolean", description: "", default: true },
  { flag: "head-bn", type: "boolean", description: "", default: true },
  { flag: "epochs", type: "int", description: "", default: 8 },
];

test("a boolean flag followed by false, no, 0 turns the option off", () => {
  for (const word of ["false", "no", "0"]) {
    const parsed = parseArgs(["--per-stage", word, "--head-bn", word], specs, "train");
    assert.equal(parsed.values.perStage, false, word);
    assert.equal(parsed.values.headBn, false, word);
    assert.deepEqual(parsed.positionals, []);
  }
});

test("a boolean flag followed by true, or by another flag, or alone, turns it on", () => {
  const off = { perStage: false, headBn: false };
  assert.equal(parseArgs(["--per-stage", "true"], specs, "t").values.perStage, true);
  const both = parseArgs(["--no-per-stage", "--per-stage", "--epochs", "3"], specs, "t");
  assert.equal(both.values.perStage, true);
  assert.equal(both.values.epochs, 3);
  assert.equal(parseArgs(["--no-head-bn"], specs, "t").values.headBn, off.headBn);
  assert.equal(parseArgs(["--head-bn=false"], specs, "t").values.headBn, false);
});

test("a word after a boolean flag that is not a boolean stays a positional argument", () => {
  const parsed = parseArgs(["--per-stage", "runs/x"], specs, "eval");
  assert.equal(parsed.values.perStage, true);
  assert.deepEqual(parsed.positionals, ["runs/x"]);
});

test("a stray positional argument is a usage error (exit 2) naming it", () => {
  for (const args of [
    ["train", "stray-word", "--epochs", "1"],
    ["memory", "--encoder", "resnet18", "extra"],
    ["eval", "runs/a", "runs/b"],
  ]) {
    const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: "utf8", env: ENV, timeout: 60_000 });
    assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, /unexpected argument '(stray-word|extra|runs\/b)'/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  }
});

test("each command that takes a target accepts one (it is not refused as a stray argument)", () => {
  for (const command of ["eval", "embed", "finetune", "export", "report", "experiment"]) {
    const r = spawnSync(process.execPath, [MAIN, command, "/nonexistent/target"], {
      encoding: "utf8",
      env: ENV,
      timeout: 60_000,
    });
    assert.doesNotMatch(r.stderr, /unexpected argument/, `${command}: ${r.stderr}`);
    assert.notEqual(r.status, 0, `${command}: a missing target is still an error`);
  }
});
