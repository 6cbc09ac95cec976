// The `loco` CLI as a user runs it: child processes of dist/src/cli/main.js. Help lists every option
// (from the same spec lists the parser uses) with its default; bad flags, values and config fields
// exit with status 2 and a message naming them; config files (JSON, YAML) are read and flags
// override them; `loco memory --json` prints per-method peaks; and tiny `loco train` runs of SimCLR,
// GIM and LoCo on Fashion-MNIST leave a complete run directory.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { trainSpecs } from "../src/cli/train";
import { resolveTrainOptions } from "../src/learning/options";
import { memorySpecs } from "../src/cli/memory";
import { finetuneSpecs } from "../src/cli/finetune";
import { exportSpecs } from "../src/cli/export";
import { type OptionSpec, parseArgs } from "../src/cli/options";
import { readMetrics } from "../src/learning/metrics";

const MAIN = path.join(__dirname, "..", "src", "cli", "main.js");
const FASHION_MNIST = "/usr/share/datasets/fashion-mnist";
const ENV = { ...process.env, LOCO_NUM_THREADS: "1", OMP_NUM_THREADS: "1" };

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function loco(args: string[], timeoutMs = 60_000): Run {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: "utf8", env: ENV, timeout: timeoutMs });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The same command, asynchronously (the training runs overlap). */
function locoAsync(args: string[], timeoutMs = 120_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(process.execPath, [MAIN, ...args], {
      env: ENV,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** Runs the commands two at a time (the machine has two cores), results in order. */
async function locoMany(argvs: string[][]): Promise<Run[]> {
  const results: Run[] = new Array(argvs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < argvs.length) {
      const i = next++;
      results[i] = await locoAsync(argvs[i]);
    }
  };
  await Promise.all([worker(), worker()]);
  return results;
}

const show = (r: Run): string => `exit ${r.status}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;

let tmp = "";
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loco-cli-"));
});
after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function writeFile(name: string, text: string): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, text);
  return file;
}

/** What --help should print as a spec's default (formatHelp's rule, stated independently). */
function expectedDefault(spec: OptionSpec): string {
  if (spec.defaultText !== undefined) return spec.defaultText;
  if (spec.default === undefined) return "none";
  return Array.isArray(spec.default) ? spec.default.join(",") : String(spec.default);
}

/** The help entry of --flag: from its line to the next option line (descriptions may wrap). */
function helpEntry(help: string, flag: string): string | null {
  const lines = help.split("\n");
  const start = lines.findIndex((l) => new RegExp(`^\\s+--${flag}(\\s|$)`).test(l));
  if (start < 0) return null;
  let end = start + 1;
  while (end < lines.length && !/^\s+(--|-h)/.test(lines[end])) end++;
  return lines.slice(start, end).join(" ");
}

describe("loco --help", () => {
  test("top-level help lists the commands and exits 0; no command exits 2 with the usage", () => {
    const r = loco(["--help"]);
    assert.equal(r.status, 0, show(r));
    assert.match(r.stdout, /Usage: loco <command>/);
    for (const command of ["train", "memory"])
      assert.match(r.stdout, new RegExp(`^\\s+${command}\\s`, "m"), `${command} listed`);
    const bare = loco([]);
    assert.equal(bare.status, 2, show(bare));
    assert.match(bare.stdout + bare.stderr, /Usage: loco <command>/);
  });

  test("an unknown command exits 2 naming it", () => {
    const r = loco(["trian"]);
    assert.equal(r.status, 2, show(r));
    assert.match(r.stderr, /unknown command 'trian'/);
  });

  for (const [command, specs] of [
    ["train", trainSpecs],
    ["memory", memorySpecs],
  ] as const) {
    test(`loco ${command} --help lists every option (${specs.length}) with its default`, () => {
      const r = loco([command, "--help"]);
      assert.equal(r.status, 0, show(r));
      assert.match(r.stdout, new RegExp(`Usage: loco ${command}`));
      for (const spec of specs) {
        const entry = helpEntry(r.stdout, spec.flag);
        assert.ok(entry !== null, `--${spec.flag} is missing from \`loco ${command} --help\``);
        const def = /\(default: (.*)\)\s*$/.exec(entry);
        assert.ok(def !== null, `--${spec.flag} shows no default: ${entry}`);
        assert.equal(def[1], expectedDefault(spec), `--${spec.flag}: default in the help`);
        if (spec.type === "enum")
          for (const c of spec.choices ?? []) assert.ok(entry.includes(c), `--${spec.flag} lists choice ${c}`);
      }
      assert.ok(helpEntry(r.stdout, "config") !== null, "--config is listed");
      assert.match(r.stdout, /-h, --help/);
    });
  }
});

describe("loco: bad options exit 2 with a message naming them", () => {
  test("unknown options", async () => {
    const cases = [
      ["train", "--no-such-flag", "1"],
      ["train", "--epoch", "2"],
      ["memory", "--frobnicate"],
      ["train", "--no-epochs"], // --no-X only exists for boolean options
    ];
    const results = await locoMany(cases);
    for (const [i, args] of cases.entries()) {
      const r = results[i];
      assert.equal(r.status, 2, `${args.join(" ")}: ${show(r)}`);
      const flag = args[1];
      assert.ok(r.stderr.includes(`unknown option ${flag}`), `${args.join(" ")}: message names ${flag}: ${r.stderr}`);
      assert.ok(!r.stderr.includes("    at "), `no stack trace for a usage error: ${r.stderr}`);
    }
  });

  test("ill-typed values name the flag and what it expects", async () => {
    const cases: [string[], RegExp][] = [
      [["train", "--epochs", "abc"], /--epochs: expected an integer >= 1, got 'abc'/],
      [["train", "--epochs", "1.5"], /--epochs: expected an integer/],
      [["train", "--epochs", "0"], /--epochs: expected an integer >= 1/],
      [["train", "--lr", "fast"], /--lr: expected a number/],
      [["train", "--method", "byol"], /--method: expected one of simclr, gim, loco, got 'byol'/],
      [["train", "--temperature", "0.5,hot"], /--temperature: expected a number/],
      [["train", "--loss-stages", "1,x"], /--loss-stages: expected an integer/],
      [["train", "--head-bn=maybe"], /--head-bn: expected true or false/],
      [["train", "--momentum", "2"], /--momentum: expected a number in \[0, 1\]/],
      [["train", "--epochs"], /--epochs: expected a value/],
      [["memory", "--batch-size", "1"], /--batch-size: expected an integer >= 2, got '1'/],
      [["memory", "--encoder", "vgg16"], /--encoder: expected one of resnet18, resnet34, resnet50/],
      [["memory", "--methods", "simclr,byol"], /--methods: unknown method 'byol'/],
      [["memory", "--splits", "even"], /--splits: unknown value 'even'/],
      [["memory", "--budget", "lots"], /--budget: expected a size like 8GiB/],
      [["train", "--split", "4,x"], /--split: expected resnet, balanced-memory, balanced-compute or comma-separated/],
      [["train", "--overlap", "drop"], /--overlap: expected one of retain, recompute/],
    ];
    const results = await locoMany(cases.map(([args]) => args));
    for (const [i, [args, message]] of cases.entries()) {
      const r = results[i];
      assert.equal(r.status, 2, `${args.join(" ")}: ${show(r)}`);
      assert.match(r.stderr, message, `${args.join(" ")}`);
    }
  });
});

const TINY_MEMORY = ["--encoder", "resnet18", "--image-size", "16", "--batch-size", "4", "--width", "4", "--json"];

interface MemoryRow {
  method: string;
  split: string;
  stages: number;
  overlap: string;
  cuts: number[];
  peakBytes: number;
  activationPeakBytes: number;
  stageBytes: number[];
  stepSeconds: number;
  stepRatio: number | null;
}

function parseMemory(r: Run): MemoryRow[] {
  assert.equal(r.status, 0, show(r));
  const rows = JSON.parse(r.stdout) as MemoryRow[];
  assert.ok(Array.isArray(rows), `a JSON array: ${r.stdout}`);
  return rows;
}

describe("loco memory", () => {
  test("--json: simclr, gim, loco with ResNet's stages and retained graphs first, then each split and overlap", () => {
    const rows = parseMemory(loco(["memory", ...TINY_MEMORY]));
    assert.deepEqual(
      rows.slice(0, 3).map((r) => [r.method, r.split, r.overlap]),
      [
        ["simclr", "resnet", "retain"],
        ["gim", "resnet", "retain"],
        ["loco", "resnet", "retain"],
      ],
    );
    const settings = rows.map((r) => `${r.method} ${r.split} ${r.stages} ${r.overlap}`);
    for (const s of [
      "loco resnet 4 recompute",
      "loco balanced-memory 8 recompute",
      "simclr balanced-memory 4 retain",
      "gim balanced-memory 8 recompute-min",
      "loco balanced-memory 8 recompute-min",
    ])
      assert.ok(settings.includes(s), `a row for ${s}: ${settings.join("; ")}`);
    assert.ok(!settings.some((s) => s.startsWith("gim") && s.endsWith("recompute")), "GIM has no late messages");
    assert.equal(new Set(settings).size, settings.length, "each setting once");
    for (const row of rows) {
      assert.equal(row.cuts.length + 1, row.stages);
      assert.equal(row.stageBytes.length, row.stages);
      assert.ok(Number.isInteger(row.peakBytes) && row.peakBytes > 0, `${row.method} peakBytes ${row.peakBytes}`);
      assert.ok(
        Number.isInteger(row.activationPeakBytes) && row.activationPeakBytes > 0,
        `${row.method} activationPeakBytes`,
      );
      assert.ok(row.activationPeakBytes <= row.peakBytes, `${row.method}: activation peak within the peak`);
      assert.ok(row.stepSeconds > 0 && row.stepRatio !== null && row.stepRatio > 0);
    }
    assert.equal(rows[0].stepRatio, 1);
    const at = (s: string): MemoryRow => rows[settings.indexOf(s)];
    // Same learning, less memory: recompute frees the stage graph LoCo retains for the bridge.
    assert.ok(at("loco resnet 4 recompute").activationPeakBytes < at("loco resnet 4 retain").activationPeakBytes);
  });

  test("--budget: the largest batch and image size that fit, each measured", () => {
    const args = ["--splits", "resnet", "--overlaps", "retain", "--methods", "simclr,gim"];
    const rows = JSON.parse(loco(["memory", ...TINY_MEMORY, ...args, "--budget", "6MiB"]).stdout) as (MemoryRow & {
      batchSize: number;
      imageSize: number;
    })[];
    assert.deepEqual(
      rows.map((r) => r.method),
      ["simclr", "gim"],
    );
    for (const row of rows) {
      const measure = (batch: number, size: number): number =>
        parseMemory(
          loco([
            "memory",
            ...TINY_MEMORY,
            ...args,
            "--methods",
            row.method,
            "--batch-size",
            String(batch),
            "--image-size",
            String(size),
          ]),
        )[0].peakBytes;
      assert.ok(row.batchSize >= 2, `${row.method}: batch ${row.batchSize}`);
      assert.ok(measure(row.batchSize, 16) <= 6 * 2 ** 20, `${row.method}: its batch fits`);
      assert.ok(measure(row.batchSize + 1, 16) > 6 * 2 ** 20, `${row.method}: one more does not`);
    }
    assert.ok(rows[1].batchSize >= rows[0].batchSize, "GIM fits at least end to end's batch");
  });
});

describe("config files", () => {
  test("JSON and YAML configs are read (camelCase or kebab-case fields); flags override them", () => {
    const json = writeFile(
      "memory.json",
      JSON.stringify({
        encoder: "resnet18",
        imageSize: 16,
        batchSize: 4,
        width: 4,
        methods: "gim",
        splits: "resnet",
        overlaps: "retain",
        json: true,
      }),
    );
    assert.deepEqual(
      parseMemory(loco(["memory", "--config", json])).map((r) => r.method),
      ["gim"],
    );
    const yaml = writeFile(
      "memory.yaml",
      "encoder: resnet18\nimage-size: 16\nbatchSize: 4\nwidth: 4\nmethods: loco\nsplits: resnet\noverlaps: retain\njson: true\n",
    );
    assert.deepEqual(
      parseMemory(loco(["memory", "--config", yaml])).map((r) => r.method),
      ["loco"],
    );
    // The flag wins over the file, whichever comes first on the command line.
    assert.deepEqual(
      parseMemory(loco(["memory", "--methods", "simclr", "--config", yaml])).map((r) => r.method),
      ["simclr"],
    );
    assert.deepEqual(
      parseMemory(loco(["memory", `--config=${json}`, "--methods=loco,gim"])).map((r) => r.method),
      ["loco", "gim"],
    );
  });

  test("unknown and ill-typed fields are rejected naming the field", async () => {
    const cases: [string, string, string[], RegExp][] = [
      [
        "unknown.json",
        JSON.stringify({ epochs: 1, learningRate: 0.1 }),
        ["train"],
        /unknown field 'learningRate' for `loco train`/,
      ],
      ["unknown.yaml", "epochs: 1\nbogus-field: 3\n", ["train"], /unknown field 'bogus-field'/],
      [
        "typed.json",
        JSON.stringify({ epochs: "two" }),
        ["train"],
        /field 'epochs': expected an integer >= 1, got 'two'/,
      ],
      ["typed.yaml", "method: loco\nheadBn: sometimes\n", ["train"], /field 'headBn': expected true or false/],
      ["list.yaml", "temperature: [0.5, warm]\n", ["train"], /field 'temperature': expected a number/],
      ["memory.yml", "batchSize: 1\n", ["memory"], /field 'batchSize': expected an integer >= 2/],
      ["broken.json", "{ epochs: 1", ["train"], /not valid JSON/],
      ["array.yaml", "- 1\n- 2\n", ["train"], /must hold an object of fields/],
    ];
    const results = await locoMany(
      cases.map(([name, text, command]) => [...command, "--config", writeFile(name, text)]),
    );
    for (const [i, [name, , , message]] of cases.entries()) {
      const r = results[i];
      assert.equal(r.status, 2, `${name}: ${show(r)}`);
      assert.match(r.stderr, message, name);
      assert.ok(r.stderr.includes(name), `${name}: the message names the file: ${r.stderr}`);
    }
    const missing = loco(["train", "--config", path.join(tmp, "absent.yaml")]);
    assert.equal(missing.status, 2, show(missing));
    assert.match(missing.stderr, /absent\.yaml: cannot read config file/);
  });
});

// ---- docs/methods.md stays true to the CLI ----

const METHODS_DOC = path.join(__dirname, "..", "..", "docs", "methods.md");

describe("docs/methods.md", { skip: fs.existsSync(METHODS_DOC) ? false : "docs/methods.md not found" }, () => {
  const doc = fs.existsSync(METHODS_DOC) ? fs.readFileSync(METHODS_DOC, "utf8") : "";

  test("every --flag it mentions is an option of loco train, memory, finetune or export", () => {
    const specs = [...trainSpecs, ...memorySpecs, ...finetuneSpecs, ...exportSpecs];
    const known = new Set(specs.map((s) => s.flag));
    for (const s of specs) if (s.type === "boolean") known.add(`no-${s.flag}`);
    known.add("config").add("help");
    const mentioned = new Set([...doc.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*)/g)].map((m) => m[1]));
    assert.ok(mentioned.size > 10, "the doc mentions flags");
    const unknown = [...mentioned].filter((f) => !known.has(f));
    assert.deepEqual(unknown, [], `flags in docs/methods.md that loco does not have: ${unknown.join(", ")}`);
  });

  test("each ablation row's flags resolve to the losses / reach / c / m it states", () => {
    const section = doc.slice(doc.indexOf("## The author response's ablations as commands"));
    let checked = 0;
    for (const line of section.split("\n")) {
      const cells = line.split("|").map((c) => c.trim());
      if (cells.length < 5) continue;
      const stated = /^S_(\d)(?:–S_(\d))? \/ (\d) \/ (\d) \/ (\d)$/.exec(cells[3]);
      const flags = /^`([^`]+)`$/.exec(cells[2]);
      if (stated === null || flags === null) continue;
      const argv = flags[1].split(/\s+/);
      const parsed = parseArgs(argv, trainSpecs, "train");
      const { learning } = resolveTrainOptions(parsed.values);
      const first = Number(stated[1]);
      const last = stated[2] === undefined ? first : Number(stated[2]);
      const stages = Array.from({ length: last - first + 1 }, (_, i) => first + i);
      const what = `${cells[1]} (${flags[1]})`;
      assert.deepEqual(learning.lossStages, stages, `${what}: loss stages`);
      assert.equal(learning.reach, Number(stated[3]), `${what}: reach`);
      assert.equal(learning.convBlocks, Number(stated[4]), `${what}: conv blocks`);
      assert.equal(learning.mlpLayers, Number(stated[5]), `${what}: MLP layers`);
      checked++;
    }
    assert.ok(checked >= 9, `checked ${checked} ablation rows`);
  });
});

// ---- tiny training runs ----

const TINY_TRAIN = {
  trainSubset: 256,
  batchSize: 64,
  width: 4,
  epochs: 1,
  knnEvery: 0,
  readoutEpochs: 2,
  readoutTrainSize: 300,
  baselines: "random-init",
  threads: 1,
};
const toFlags = (o: Record<string, unknown>): string[] =>
  Object.entries(o).flatMap(([k, v]) => [`--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`, String(v)]);

const haveData = fs.existsSync(path.join(FASHION_MNIST, "train-images-idx3-ubyte")) || fs.existsSync(FASHION_MNIST);
const trainSkip = haveData ? false : `Fashion-MNIST is not installed at ${FASHION_MNIST}`;

describe("loco train (tiny Fashion-MNIST runs)", { skip: trainSkip }, () => {
  const runs: Record<string, { dir: string; result: Promise<Run> }> = {};

  before(() => {
    // simclr from flags only; gim from a YAML config whose method (loco) a flag overrides; loco from JSON.
    const simclrDir = path.join(tmp, "run-simclr");
    runs.simclr = {
      dir: simclrDir,
      result: locoAsync(["train", "--method", "simclr", ...toFlags(TINY_TRAIN), "--run-dir", simclrDir]),
    };
    const gimDir = path.join(tmp, "run-gim");
    const yaml = writeFile(
      "gim.yaml",
      Object.entries({ method: "loco", ...TINY_TRAIN, runDir: gimDir, seed: 3 })
        .map(([k, v]) => `${k}: ${v}`)
        .join("\n"),
    );
    runs.gim = { dir: gimDir, result: locoAsync(["train", "--config", yaml, "--method", "gim"]) };
    const locoDir = path.join(tmp, "run-loco");
    const json = writeFile("loco.json", JSON.stringify({ method: "loco", ...TINY_TRAIN, "run-dir": locoDir }));
    runs.loco = { dir: locoDir, result: locoAsync(["train", "--config", json]) };
  });

  const inUnit = (x: unknown, what: string): void => {
    assert.equal(typeof x, "number", `${what} is a number`);
    assert.ok((x as number) >= 0 && (x as number) <= 1, `${what} = ${x} is a fraction in [0, 1]`);
  };

  for (const [method, stagesWithLoss] of [
    ["simclr", 1],
    ["gim", 4],
    ["loco", 4],
  ] as const) {
    test(`--method ${method}: results.json, config.json, metrics.jsonl, a checkpoint`, async () => {
      const { dir, result } = runs[method];
      const r = await result;
      assert.equal(r.status, 0, show(r));
      assert.match(
        r.stdout,
        new RegExp(
          `${method} \\(losses [\\d,]+, reach \\d, c \\d, m \\d, t [\\d.]+, simultaneous\\), resnet18-w4-cifar, 1 epochs`,
        ),
        "the results table names the run with its full method settings",
      );

      const results = JSON.parse(fs.readFileSync(path.join(dir, "results.json"), "utf8"));
      assert.equal(results.method, method);
      assert.equal(results.learning.lossStages.length, stagesWithLoss, "results.json holds the method's settings");
      assert.match(results.methodSettings, new RegExp(`^${method} \\(losses `));
      assert.equal(results.dataset, "fashion-mnist");
      inUnit(results.linear?.top1, "linear.top1");
      inUnit(results.knn?.top1, "knn.top1");
      inUnit(results.baselines?.randomInit?.top1, "baselines.randomInit.top1");
      assert.equal(results.training.steps, 4, "256 images / batch 64 = 4 steps");

      const config = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8"));
      assert.equal(config.resolved.method, method);
      assert.equal(config.resolved.batchSize, 64);
      assert.equal(config.resolved.encoder.width, 4);
      assert.equal(config.resolved.learning.lossStages.length, stagesWithLoss);
      if (method === "gim") assert.equal(config.resolved.seed, 3, "the YAML config's seed is used");

      // Every line is a well-formed record of its kind (readMetrics checks them).
      const records = readMetrics(path.join(dir, "metrics.jsonl"));
      const steps = records.filter((m) => m.type === "step");
      assert.ok(steps.length >= 1, `step records in metrics.jsonl: ${JSON.stringify(records)}`);
      for (const s of steps) {
        assert.ok(Number.isInteger(s.step) && s.step >= 1, `step number ${s.step}`);
        const loss = s.loss;
        assert.equal(loss.length, stagesWithLoss, `one loss per loss stage: ${JSON.stringify(loss)}`);
        assert.ok(
          loss.every((v) => Number.isFinite(v) && v > 0),
          `finite positive losses ${JSON.stringify(loss)}`,
        );
      }
      assert.ok(
        records.some((m) => m.type === "epoch"),
        "an epoch record",
      );

      const checkpoints = fs.readdirSync(path.join(dir, "checkpoints")).filter((f) => f.endsWith(".safetensors"));
      assert.ok(checkpoints.length >= 1, `a checkpoint in ${dir}/checkpoints`);
    });
  }

  test("a run directory that already holds a run is refused", async () => {
    await runs.simclr.result;
    const r = loco(["train", ...toFlags(TINY_TRAIN), "--run-dir", runs.simclr.dir]);
    assert.equal(r.status, 2, show(r));
    assert.match(r.stderr, /already holds a run/);
  });
});
