// `npm run bench:engine-ops`: where loco's SimCLR-style step spends its time against PyTorch's, op by
// op. Each side runs the step of `npm run bench:engine` in its own process under bench/opcount.cpp
// (built here with g++ and preloaded), which records every ATen operator and autograd node by phase
// with its count, wall time, thread CPU time and minor page faults; the warm-up steps are not
// recorded. The two sides alternate for --rounds rounds (the order flips each round), so a loaded
// machine still shows ratios. Per phase it prints the top-level events (inclusive) and every event
// by name (self time), sorted by the difference, with the time outside any operator; each table
// adds up to the phase's total. Described in bench/README.md.
import { spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { findJemalloc, type Format, type ModelName } from "./engine_options";
import {
  PHASES,
  alignRows,
  emptyProfile,
  formatTable,
  phaseCost,
  phaseTable,
  readOpcount,
  type Clock,
  type Phase,
  type Profile,
  type View,
} from "./engine_ops_report";

const USAGE = `usage: node dist/bench/engine_ops.js [--model resnet50|resnet18] [--batch-size N] [--format channels_last|contiguous]
       [--steps 2] [--warmup 2] [--rounds 2] [--threads 1] [--clock cpu|wall] [--sides loco,pytorch]
       [--phases forward,backward,optimizer] [--views top,self] [--top 20] [--json]
       [--python /usr/bin/python3] [--jemalloc PATH]
  a side: loco | pytorch (+ jemalloc, never returning memory) | pytorch-installed (glibc malloc),
          each with optional +NAME=VALUE environment settings and +--flag arguments to its step driver
          (bench/engine_loco_run.ts, bench/engine_pytorch.py), e.g. --sides loco,loco+LOCO_HUGE_PAGES=0
          or --sides loco,loco+--layer4-channels-last`;

const JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1";

interface Side {
  spec: string;
  library: "loco" | "pytorch" | "pytorch-installed";
  env: Record<string, string>;
  /** Extra arguments to the side's step driver. */
  args: string[];
}

interface Options {
  model: ModelName;
  batchSize: number;
  format: Format;
  steps: number;
  warmup: number;
  rounds: number;
  threads: number;
  clock: Clock;
  sides: [Side, Side];
  phases: Phase[];
  views: View[];
  top: number;
  json: boolean;
  python: string;
  jemalloc: string | undefined;
}

function parseSide(spec: string): Side {
  const [library, ...settings] = spec.split("+");
  if (library !== "loco" && library !== "pytorch" && library !== "pytorch-installed")
    throw new RangeError(`--sides: unknown side '${library}' (expected loco, pytorch or pytorch-installed)`);
  const env: Record<string, string> = {};
  const args: string[] = [];
  for (const s of settings) {
    const eq = s.indexOf("=");
    if (s.startsWith("--")) args.push(s);
    else if (eq > 0) env[s.slice(0, eq)] = s.slice(eq + 1);
    else throw new RangeError(`--sides: '${s}' in '${spec}' is neither NAME=VALUE nor --flag`);
  }
  return { spec, library, env, args };
}

function listOf<T extends string>(flag: string, raw: string | undefined, allowed: readonly T[]): T[] {
  const items = (raw ?? "").split(",").filter(Boolean);
  const bad = items.find((i) => !(allowed as readonly string[]).includes(i));
  if (items.length === 0 || bad !== undefined)
    throw new RangeError(`${flag}: expected a list of ${allowed.join(", ")}, got '${raw ?? ""}'`);
  return items as T[];
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    model: "resnet50",
    batchSize: 4,
    format: "channels_last",
    steps: 2,
    warmup: 2, // jemalloc still page-faults in PyTorch's second step
    rounds: 2,
    threads: 1,
    clock: "cpu",
    sides: [parseSide("loco"), parseSide("pytorch")],
    phases: [...PHASES],
    views: ["top", "self"],
    top: 20,
    json: false,
    python: process.env.LOCO_BENCH_PYTHON ?? "/usr/bin/python3",
    jemalloc: process.env.LOCO_BENCH_JEMALLOC,
  };
  const int = (flag: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new RangeError(`${flag} expects an integer >= ${min}, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const v = (): string | undefined => argv[++i];
    if (flag === "--model") o.model = listOf(flag, v(), ["resnet18", "resnet50"] as const)[0];
    else if (flag === "--batch-size") o.batchSize = int(flag, v(), 2);
    else if (flag === "--format")
      o.format = listOf(flag, v()?.replace(/-/g, "_"), ["channels_last", "contiguous"] as const)[0];
    else if (flag === "--steps") o.steps = int(flag, v(), 1);
    else if (flag === "--warmup") o.warmup = int(flag, v(), 0);
    else if (flag === "--rounds") o.rounds = int(flag, v(), 1);
    else if (flag === "--threads") o.threads = int(flag, v(), 1);
    else if (flag === "--clock") o.clock = listOf(flag, v(), ["cpu", "wall"] as const)[0];
    else if (flag === "--phases") o.phases = listOf(flag, v(), PHASES);
    else if (flag === "--views") o.views = listOf(flag, v(), ["top", "self"] as const);
    else if (flag === "--top") o.top = int(flag, v(), 1);
    else if (flag === "--json") o.json = true;
    else if (flag === "--python") o.python = v() ?? o.python;
    else if (flag === "--jemalloc") o.jemalloc = v();
    else if (flag === "--sides") {
      const sides = (v() ?? "").split(",").filter(Boolean).map(parseSide);
      if (sides.length !== 2) throw new RangeError("--sides expects two sides, e.g. loco,pytorch");
      o.sides = [sides[0], sides[1]];
    } else if (flag === "--help" || flag === "-h") {
      console.log(USAGE);
      process.exit(0);
    } else throw new RangeError(`unknown option '${flag}'`);
  }
  if (o.sides.some((s) => s.library === "pytorch")) {
    o.jemalloc ??= findJemalloc();
    if (o.jemalloc === undefined || !fs.existsSync(o.jemalloc))
      throw new RangeError(`--jemalloc: ${o.jemalloc ?? "libjemalloc.so.2"} not found (scripts/setup.sh installs it)`);
  }
  return o;
}

/** A file of bench/: next to this script (dist/bench) or in the source tree. */
function benchFile(name: string): string {
  const found = [path.join(__dirname, name), path.resolve(__dirname, "../../bench", name)].find((p) =>
    fs.existsSync(p),
  );
  if (found === undefined) throw new Error(`bench: cannot find ${name} next to ${__dirname} or in bench/`);
  return found;
}

/** Builds bench/opcount.cpp once per source (cached in the temp directory by its hash). */
function buildOpcount(): string {
  const source = benchFile("opcount.cpp");
  const libtorch = process.env.LIBTORCH;
  const hash = crypto
    .createHash("sha256")
    .update(fs.readFileSync(source))
    .update(libtorch ?? "")
    .digest("hex");
  const out = path.join(os.tmpdir(), `loco-opcount-${hash.slice(0, 16)}.so`);
  if (fs.existsSync(out)) return out;
  const extra = libtorch
    ? [`-I${libtorch}/include`, `-I${libtorch}/include/torch/csrc/api/include`, `-L${libtorch}/lib`]
    : [];
  const partial = `${out}.${process.pid}.tmp`;
  const args = ["-O2", "-std=c++17", "-shared", "-fPIC", source, "-o", partial, ...extra, "-ltorch_cpu", "-lc10"];
  const r = spawnSync("g++", args, { encoding: "utf8", stdio: ["ignore", "inherit", "inherit"] });
  if (r.error || r.status !== 0)
    throw new Error(`bench: g++ ${args.join(" ")} failed (${r.error?.message ?? `status ${r.status}`})`);
  fs.renameSync(partial, out);
  return out;
}

interface DriverResult {
  phasesMs: Record<Phase, number>;
  faultsPerStep: number;
}

/** One run of one side under opcount; adds its records to `profile`. */
function runSide(o: Options, side: Side, opcount: string, profile: Profile): DriverResult {
  const outFile = path.join(os.tmpdir(), `loco-opcount-${process.pid}-${Date.now()}.tsv`);
  const threads = String(o.threads);
  const common = ["--batch-size", String(o.batchSize), "--steps", String(o.steps), "--warmup", String(o.warmup)];
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    OMP_NUM_THREADS: threads,
    LOCO_NUM_THREADS: threads,
    OPCOUNT_OUT: outFile,
    OPCOUNT_SKIP_STEPS: String(o.warmup),
    LD_PRELOAD: opcount,
  };
  let command: string;
  let args: string[];
  if (side.library === "loco") {
    command = process.execPath;
    args = [benchFile("engine_loco_run.js"), "--model", o.model, "--format", o.format, ...common];
    args.push("--threads", threads, "--clock", o.clock, "--phase-markers");
  } else {
    command = o.python;
    args = [benchFile("engine_pytorch.py"), "--skip-tiny", "--model", o.model, "--formats", o.format, ...common];
    args.push("--threads", threads, "--clock", o.clock, "--phase-markers");
    if (side.library === "pytorch")
      Object.assign(env, { LD_PRELOAD: `${o.jemalloc} ${opcount}`, MALLOC_CONF: JEMALLOC_CONF });
  }
  Object.assign(env, side.env);
  args.push(...side.args);
  const r = spawnSync(command, args, { encoding: "utf8", env, maxBuffer: 16 << 20 });
  // Node under a preloaded libtorch prints a harmless pthread_create warning at exit.
  const stderr = r.stderr.replace(/^node\[\d+\]: pthread_create: Invalid argument\n?/m, "");
  if (r.error || r.status !== 0)
    throw new Error(`bench: ${side.spec}: ${command} ${args.join(" ")} failed (status ${r.status}):\n${stderr}`);
  readOpcount(outFile, profile);
  fs.rmSync(outFile, { force: true });
  const parsed = JSON.parse(r.stdout.trim().split("\n").pop() ?? "") as
    DriverResult | { step: { formats: Record<string, DriverResult> } };
  return "step" in parsed ? parsed.step.formats[o.format] : parsed;
}

interface Measured {
  profiles: [Profile, Profile];
  /** Per round: each phase's A/B ratio of opcount's totals in the chosen clock. */
  roundRatios: Record<Phase, number>[];
  /** The drivers' own phase medians (their --clock: process CPU, all threads, or wall), per round. */
  driver: [DriverResult[], DriverResult[]];
}

function measure(o: Options, log: (s: string) => void): Measured {
  const opcount = buildOpcount();
  const m: Measured = { profiles: [emptyProfile(), emptyProfile()], roundRatios: [], driver: [[], []] };
  for (let r = 0; r < o.rounds; r++) {
    const round: [Profile, Profile] = [emptyProfile(), emptyProfile()];
    for (const i of r % 2 === 0 ? [0, 1] : [1, 0]) {
      const side = o.sides[i];
      log(`bench: round ${r + 1}/${o.rounds}, ${side.spec}, ${o.model} batch ${o.batchSize}, ${o.format} ...`);
      m.driver[i].push(runSide(o, side, opcount, round[i]));
      readInto(m.profiles[i], round[i]);
    }
    const key = o.clock === "wall" ? "wall" : "cpu";
    const ratio = (p: Phase): number => phaseCost(round[0], p)[key] / phaseCost(round[1], p)[key];
    m.roundRatios.push({ forward: ratio("forward"), backward: ratio("backward"), optimizer: ratio("optimizer") });
  }
  return m;
}

/** Adds one round's profile to the accumulated one. */
function readInto(into: Profile, from: Profile): void {
  for (const p of PHASES) {
    into.steps[p] += from.steps[p];
    const a = into.phases[p];
    const b = from.phases[p];
    into.phases[p] = { wall: a.wall + b.wall, cpu: a.cpu + b.cpu, faults: a.faults + b.faults };
  }
  into.lines.push(...from.lines);
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function summary(o: Options, m: Measured): string {
  const [a, b] = o.sides.map((s) => s.spec);
  const key = o.clock === "wall" ? "wall" : "cpu";
  const rows = [
    [
      "phase (ms per step)",
      a,
      b,
      `${a} / ${b}`,
      "per round",
      `faults ${a}`,
      `faults ${b}`,
      `driver ${a}`,
      `driver ${b}`,
    ],
  ];
  for (const p of PHASES) {
    const ca = phaseCost(m.profiles[0], p);
    const cb = phaseCost(m.profiles[1], p);
    const driver = (i: 0 | 1): string => median(m.driver[i].map((d) => d.phasesMs[p])).toFixed(1);
    rows.push([
      p,
      (ca[key] / 1e3).toFixed(1),
      (cb[key] / 1e3).toFixed(1),
      (ca[key] / cb[key]).toFixed(3),
      m.roundRatios.map((r) => r[p].toFixed(3)).join(" "),
      ca.faults.toFixed(0),
      cb.faults.toFixed(0),
      driver(0),
      driver(1),
    ]);
  }
  return alignRows(rows);
}

function jsonReport(o: Options, m: Measured): Record<string, unknown> {
  const perStep = (p: Profile, phase: Phase) => {
    const c = phaseCost(p, phase);
    return { wallMs: c.wall / 1e3, cpuMs: c.cpu / 1e3, faults: c.faults, steps: p.steps[phase] };
  };
  return {
    settings: {
      model: o.model,
      batchSize: o.batchSize,
      format: o.format,
      steps: o.steps,
      warmup: o.warmup,
      rounds: o.rounds,
      threads: o.threads,
      clock: o.clock,
      sides: o.sides.map((s) => s.spec),
      loadAverage: os.loadavg(),
    },
    phases: Object.fromEntries(
      PHASES.map((p) => [
        p,
        {
          a: perStep(m.profiles[0], p),
          b: perStep(m.profiles[1], p),
          ratioPerRound: m.roundRatios.map((r) => r[p]),
          driverMs: m.driver.map((runs) => runs.map((d) => d.phasesMs[p])),
        },
      ]),
    ),
    tables: o.phases.flatMap((p) => o.views.map((v) => phaseTable(m.profiles[0], m.profiles[1], p, v, o.clock))),
  };
}

function main(): void {
  const o = parseArgs(process.argv.slice(2));
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  const m = measure(o, log);
  if (o.json) {
    console.log(JSON.stringify(jsonReport(o, m)));
    return;
  }
  const names: [string, string] = [o.sides[0].spec, o.sides[1].spec];
  console.log(
    `${o.model}, batch ${o.batchSize} (${2 * o.batchSize} views), ${o.format}, ${o.threads} thread(s); ` +
      `${o.warmup} warm-up + ${o.steps} recorded steps x ${o.rounds} rounds per side; ${o.clock} clock ` +
      `(opcount: the calling thread's CPU time; driver: its own clock); load average ` +
      os
        .loadavg()
        .map((x) => x.toFixed(1))
        .join(" "),
  );
  console.log("");
  console.log(summary(o, m));
  for (const p of o.phases) {
    for (const v of o.views) {
      console.log("");
      console.log(formatTable(phaseTable(m.profiles[0], m.profiles[1], p, v, o.clock), o.clock, o.top, names));
    }
  }
  console.log("\n* the two sides run this event a different number of times");
}

try {
  main();
} catch (error: unknown) {
  const usage = error instanceof RangeError ? `\n${USAGE}` : "";
  console.error(`${error instanceof Error ? error.message : String(error)}${usage}`);
  process.exit(error instanceof RangeError ? 2 : 1);
}
