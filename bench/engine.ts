// `npm run bench:engine`: loco against PyTorch (python3-torch, the same libtorch) in one run.
//
//   tiny op  per-op overhead of `a + b` on two float32 [2, 2] tensors (bench/engine_loco.ts).
//   steps    a SimCLR-style training step (encoder + MLP head, NT-Xent, backward, SGD) of the CIFAR
//            ResNet-18 at 32 px (batch 128 = 256 views) and of ResNet-50 at 224 px (batch 32 = 64
//            views). PyTorch runs twice: as installed (glibc malloc) and with the tuned allocator
//            its CPU performance guide recommends (jemalloc via LD_PRELOAD, never returning memory:
//            MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1). loco is reported against the faster.
//            Per round, model and memory format the three run one after the other (the order
//            rotates each round); each figure is the median of all timed steps of the best format.
//
// Options: bench/engine_options.ts (USAGE), described in bench/README.md.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { getNumThreads, liveTensors, setNumThreads } from "../src/torch";
import { clockFor, locoStep, locoTinyOp, median } from "./engine_loco";
import {
  addPaired,
  measurePaired,
  pairedSettings,
  printPaired,
  type PairedRun,
  type PairedRuns,
} from "./engine_paired";
import {
  JEMALLOC_CONF,
  MODELS,
  USAGE,
  parseArgs,
  pythonEnv,
  pythonScript,
  type Format,
  type ModelName,
  type Options,
  type PyVariant,
} from "./engine_options";

type Library = "loco" | PyVariant;
type Phases = { forward: number; backward: number; optimizer: number };

interface PyResult {
  version: string;
  python: string;
  threads: number;
  allocator: string;
  libtorch?: string;
  tinyOpUs?: number;
  step?: {
    formats: Record<
      string,
      { medianMs: number; timesMs: number[]; phasesMs: Phases; loss: number; faultsPerStep: number }
    >;
  };
}

function runPython(o: Options, variant: PyVariant, extra: string[]): PyResult {
  const args = [
    pythonScript(),
    ...["--threads", String(o.threads), "--steps", String(o.steps), "--warmup", String(o.warmup)],
    ...["--tiny-iters", String(o.tinyIters), "--repeats", String(o.repeats), "--clock", o.clock],
    ...extra,
  ];
  const r = spawnSync(o.python, args, {
    encoding: "utf8",
    env: pythonEnv(o, variant),
    maxBuffer: 16 << 20,
    stdio: ["ignore", "pipe", "inherit"],
  });
  if (r.error)
    throw new Error(`bench: cannot run ${o.python} (${r.error.message}); set --python to an interpreter with torch`);
  if (r.status !== 0) throw new Error(`bench: ${o.python} ${args.join(" ")} exited with status ${r.status}`);
  const out = JSON.parse(r.stdout.trim().split("\n").pop() ?? "") as PyResult;
  const expected = variant === "pytorchTuned" ? "jemalloc" : "glibc";
  if (out.allocator !== expected)
    throw new Error(`bench: PyTorch (${variant}) ran with allocator ${out.allocator}, expected ${expected}`);
  return out;
}

function libtorchPath(): string | undefined {
  try {
    const maps = fs.readFileSync("/proc/self/maps", "utf8");
    const m = maps.match(/\s(\/\S*libtorch_cpu\.so[^\s]*)/);
    return m ? fs.realpathSync(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function packageVersion(): string {
  for (const p of [path.resolve(__dirname, "../../package.json"), path.resolve(__dirname, "../package.json")]) {
    if (fs.existsSync(p)) return (JSON.parse(fs.readFileSync(p, "utf8")) as { version: string }).version;
  }
  return "?";
}

/** Every timed step, by model, library and format; the last loss; phases; loco's tensor peak. */
class StepRecord {
  readonly times = new Map<string, number[]>();
  readonly phases = new Map<string, Phases[]>();
  readonly losses = new Map<string, number>();
  readonly faults = new Map<string, number[]>();
  readonly locoPeakMB: Partial<Record<ModelName, number>> = {};

  add(
    model: ModelName,
    lib: Library,
    format: Format,
    timesMs: number[],
    phases: Phases,
    loss: number,
    faultsPerStep: number,
  ): void {
    const key = `${model}/${lib}/${format}`;
    this.faults.set(key, [...(this.faults.get(key) ?? []), faultsPerStep]);
    this.times.set(key, [...(this.times.get(key) ?? []), ...timesMs]);
    this.phases.set(key, [...(this.phases.get(key) ?? []), phases]);
    this.losses.set(key, loss);
  }

  ms(model: ModelName, lib: Library, format: Format): number {
    return median(this.times.get(`${model}/${lib}/${format}`) ?? [NaN]);
  }

  faultsPerStep(model: ModelName, lib: Library, format: Format): number {
    return median(this.faults.get(`${model}/${lib}/${format}`) ?? [NaN]);
  }

  phasesMs(model: ModelName, lib: Library, format: Format): Phases {
    const all = this.phases.get(`${model}/${lib}/${format}`) ?? [];
    const m = (k: keyof Phases): number => median(all.map((p) => p[k]));
    return { forward: m("forward"), backward: m("backward"), optimizer: m("optimizer") };
  }

  best(model: ModelName, lib: Library, formats: Format[]): { format: Format; ms: number } {
    let out = { format: formats[0], ms: Infinity };
    for (const f of formats) {
      const ms = this.ms(model, lib, f);
      if (ms < out.ms) out = { format: f, ms };
    }
    return out;
  }
}

async function measureSteps(o: Options, log: (s: string) => void): Promise<StepRecord> {
  const record = new StepRecord();
  const libs: Library[] = [...o.variants, "loco"];
  for (let r = 0; r < o.rounds; r++) {
    const order = libs.map((_, i) => libs[(i + r) % libs.length]); // rotate who goes first
    for (const model of o.models) {
      const batch = o.batchSize ?? MODELS[model].batchSize;
      for (const f of o.formats) {
        for (const lib of order) {
          const where = `bench: round ${r + 1}/${o.rounds}, ${model} batch ${batch} (${2 * batch} views), ${f}, ${lib}`;
          log(`${where} ...`);
          if (lib === "loco") {
            const s = await locoStep(model, f, batch, o.steps, o.warmup, clockFor(o.clock));
            record.add(model, lib, f, s.timesMs, s.phasesMs, s.loss, s.faultsPerStep);
            record.locoPeakMB[model] = Math.max(record.locoPeakMB[model] ?? 0, s.peakMB);
            log(`${where}: median ${s.medianMs.toFixed(1)} ms`);
          } else {
            const args = ["--skip-tiny", "--model", model, "--batch-size", String(batch), "--formats", f];
            const py = runPython(o, lib, o.profile ? [...args, "--profile"] : args);
            const s = py.step!.formats[f];
            record.add(model, lib, f, s.timesMs, s.phasesMs, s.loss, s.faultsPerStep);
            log(`${where}: median ${s.medianMs.toFixed(1)} ms`);
          }
        }
      }
    }
  }
  return record;
}

/** Paired mode: per model, turns of one step per side (bench/engine_paired.ts). */
async function measurePairs(o: Options, log: (s: string) => void): Promise<{ record: StepRecord; runs: PairedRuns }> {
  const record = new StepRecord();
  const runs: PairedRuns = {};
  const format = o.formats[0];
  for (const model of o.models) {
    const batch = o.batchSize ?? MODELS[model].batchSize;
    log(
      `bench: ${model} batch ${batch} (${2 * batch} views), ${format}, paired: ${o.warmup} warm-up steps per side ...`,
    );
    const run = await measurePaired(o, model, format, batch, clockFor(o.clock), log);
    for (const side of ["loco", ...o.variants] as Library[]) {
      const steps = run.turns.map((t) => t.steps[side]!);
      if (!Number.isFinite(steps[steps.length - 1].loss)) throw new Error(`bench: ${side}'s loss is not finite`);
      const phase = (k: keyof Phases): number => median(steps.map((s) => s.phasesMs[k]));
      const phases = { forward: phase("forward"), backward: phase("backward"), optimizer: phase("optimizer") };
      const faults = median(steps.map((s) => s.faults));
      record.add(
        model,
        side,
        format,
        steps.map((s) => s.ms),
        phases,
        steps[steps.length - 1].loss,
        faults,
      );
    }
    record.locoPeakMB[model] = run.locoPeakMB;
    runs[model] = run;
  }
  return { record, runs };
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  setNumThreads(o.threads);
  const log = (s: string): void => void process.stderr.write(`${s}\n`);

  const pyTiny: Partial<Record<PyVariant, PyResult>> = {};
  let tiny: Tiny | undefined;
  if (o.tiny) {
    log(`bench: tiny op (${o.repeats} x ${o.tinyIters} ops each) ...`);
    for (const v of o.variants) pyTiny[v] = runPython(o, v, ["--skip-step"]);
    tiny = await locoTinyOp(o.tinyIters, o.repeats);
  }
  const paired = o.paired === undefined ? undefined : await measurePairs(o, log);
  const steps = paired?.record ?? (await measureSteps(o, log));
  const info = pyTiny.pytorch ?? pyTiny.pytorchTuned ?? runPython(o, o.variants[0], ["--skip-step", "--skip-tiny"]);
  const { result, bestFormat, fasterPyTorch } = summarize(o, tiny, pyTiny, steps);
  if (paired) addPaired(o, result, paired.runs, fasterPyTorch);
  result.settings = settingsOf(o, steps, info, bestFormat, fasterPyTorch, tiny);
  if (paired) (result.settings as Record<string, unknown>).paired = pairedSettings(o, paired.runs);
  if (o.json) console.log(JSON.stringify(result));
  else printTable(o, result, steps, tiny);
}

type Tiny = { releaseUs: number; scopeUs: number };
/** The headline figures and ratios (loco against the faster PyTorch, and against each). */
function summarize(
  o: Options,
  tiny: Tiny | undefined,
  pyTiny: Partial<Record<PyVariant, PyResult>>,
  steps: StepRecord,
): {
  result: Record<string, unknown>;
  bestFormat: Record<string, Record<string, Format>>;
  fasterPyTorch: Record<string, PyVariant>;
} {
  const result: Record<string, unknown> = {};
  const ratio: Record<string, number> = {};
  if (tiny) {
    result.tinyOpUs = {
      loco: tiny.releaseUs,
      ...Object.fromEntries(o.variants.map((v) => [v, pyTiny[v]!.tinyOpUs!])),
    };
    ratio.tinyOp = tiny.releaseUs / Math.min(...o.variants.map((v) => pyTiny[v]!.tinyOpUs!));
  }
  const bestFormat: Record<string, Record<string, Format>> = {};
  const fasterPyTorch: Record<string, PyVariant> = {};
  for (const model of o.models) {
    const entry: Record<string, number> = {};
    bestFormat[model] = {};
    for (const lib of ["loco", ...o.variants] as Library[]) {
      const b = steps.best(model, lib, o.formats);
      entry[lib] = b.ms;
      bestFormat[model][lib] = b.format;
    }
    const faster = o.variants.reduce((a, b) => (entry[b] < entry[a] ? b : a));
    fasterPyTorch[model] = faster;
    result[`${model}StepMs`] = entry;
    ratio[`${model}Step`] = entry.loco / entry[faster];
    for (const v of o.variants)
      ratio[`${model}StepVs${v === "pytorch" ? "Installed" : "Tuned"}`] = entry.loco / entry[v];
  }
  result.ratio = ratio;
  return { result, bestFormat, fasterPyTorch };
}

/** How the run was made, and the per-format, per-phase and page-fault detail. */
function settingsOf(
  o: Options,
  steps: StepRecord,
  info: PyResult,
  bestFormat: Record<string, Record<string, Format>>,
  fasterPyTorch: Record<string, PyVariant>,
  tiny: Tiny | undefined,
): Record<string, unknown> {
  const libs: Library[] = ["loco", ...o.variants];
  return {
    threads: { loco: getNumThreads(), pytorch: info.threads },
    batchSize: Object.fromEntries(o.models.map((m) => [m, o.batchSize ?? MODELS[m].batchSize])),
    imageSize: Object.fromEntries(o.models.map((m) => [m, MODELS[m].imageSize])),
    clock: o.clock,
    steps: o.steps * o.rounds,
    warmup: o.warmup,
    rounds: o.rounds,
    formats: o.formats,
    bestFormat,
    fasterPyTorch,
    pytorchTunedAllocator: o.variants.includes("pytorchTuned")
      ? { LD_PRELOAD: o.jemalloc, MALLOC_CONF: JEMALLOC_CONF }
      : null,
    stepMsByFormat: Object.fromEntries(
      o.models.map((m) => [
        m,
        Object.fromEntries(libs.map((l) => [l, Object.fromEntries(o.formats.map((f) => [f, steps.ms(m, l, f)]))])),
      ]),
    ),
    phasesMsAtBestFormat: Object.fromEntries(
      o.models.map((m) => [m, Object.fromEntries(libs.map((l) => [l, steps.phasesMs(m, l, bestFormat[m][l])]))]),
    ),
    pageFaultsPerStepAtBestFormat: Object.fromEntries(
      o.models.map((m) => [m, Object.fromEntries(libs.map((l) => [l, steps.faultsPerStep(m, l, bestFormat[m][l])]))]),
    ),
    tinyOpScopeUs: tiny?.scopeUs,
    locoPeakTensorMB: steps.locoPeakMB,
    versions: {
      loco: packageVersion(),
      node: process.versions.node,
      torch: info.version,
      python: info.python,
      libtorch: { loco: libtorchPath() ?? "?", pytorch: info.libtorch ?? "?" },
    },
    cpu: `${os.cpus()[0]?.model ?? "?"} x ${os.cpus().length}`,
    loadAverage: os.loadavg(),
    liveTensorsAfter: liveTensors(),
  };
}

function printTable(o: Options, result: Record<string, unknown>, steps: StepRecord, tiny: Tiny | undefined): void {
  const ratio = result.ratio as Record<string, number>;
  const settings = result.settings as { fasterPyTorch: Record<string, PyVariant> };
  const name = { pytorch: "PyTorch", pytorchTuned: "PyTorch + jemalloc" } as const;
  const header = ["metric", "loco", ...o.variants.map((v) => name[v]), "loco / faster PyTorch", "target"];
  const rows: string[][] = [header];
  const tinyUs = result.tinyOpUs as Record<string, number> | undefined;
  if (tiny && tinyUs) {
    rows.push([
      "tiny op a+b [2,2] (µs/op)",
      tiny.releaseUs.toFixed(3),
      ...o.variants.map((v) => tinyUs[v].toFixed(3)),
      ratio.tinyOp.toFixed(2),
      "≤ 2.00",
    ]);
    rows.push(["  same, freed by scope()", tiny.scopeUs.toFixed(3), ...o.variants.map(() => ""), "", ""]);
  }
  for (const model of o.models) {
    const ms = result[`${model}StepMs`] as Record<string, number>;
    const batch = o.batchSize ?? MODELS[model].batchSize;
    rows.push([
      `${MODELS[model].label}, batch ${batch}: step (ms), best format`,
      ms.loco.toFixed(1),
      ...o.variants.map((v) => ms[v].toFixed(1)),
      ratio[`${model}Step`].toFixed(2),
      "≤ 0.95",
    ]);
    for (const f of o.formats) {
      const faster = settings.fasterPyTorch[model];
      rows.push([
        `  ${f}`,
        steps.ms(model, "loco", f).toFixed(1),
        ...o.variants.map((v) => steps.ms(model, v, f).toFixed(1)),
        (steps.ms(model, "loco", f) / steps.ms(model, faster, f)).toFixed(2),
        "",
      ]);
    }
    const paired = (result.pairedRatio as Record<string, PairedRun["ratios"]> | undefined)?.[`${model}Step`];
    const pairedVsFaster = paired?.[settings.fasterPyTorch[model]];
    if (pairedVsFaster) {
      const q = pairedVsFaster;
      rows.push([
        `  paired turns (${q.pairs}): median of loco / PyTorch per turn [25–75%]`,
        "",
        ...o.variants.map(() => ""),
        `${q.median.toFixed(2)} [${q.q25.toFixed(2)}–${q.q75.toFixed(2)}]`,
        "≤ 0.95",
      ]);
    }
    const bestOf = (lib: Library) => steps.best(model, lib, o.formats).format;
    rows.push([
      "  minor page faults per step, best format",
      steps.faultsPerStep(model, "loco", bestOf("loco")).toFixed(0),
      ...o.variants.map((v) => steps.faultsPerStep(model, v, bestOf(v)).toFixed(0)),
      "",
      "",
    ]);
    for (const phase of ["forward", "backward", "optimizer"] as const) {
      const best = (lib: Library) => steps.best(model, lib, o.formats).format;
      rows.push([
        `  ${phase} (ms), best format`,
        steps.phasesMs(model, "loco", best("loco"))[phase].toFixed(1),
        ...o.variants.map((v) => steps.phasesMs(model, v, best(v))[phase].toFixed(1)),
        "",
        "",
      ]);
    }
  }
  const widths = header.map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r: string[]): string =>
    r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join("  ");
  console.log(line(rows[0]));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of rows.slice(1)) console.log(line(r));
  printSettings(o, result);
}

function printSettings(o: Options, result: Record<string, unknown>): void {
  const st = result.settings as {
    threads: { loco: number; pytorch: number };
    clock: string;
    loadAverage: number[];
    locoPeakTensorMB: Record<string, number>;
    versions: { loco: string; node: string; torch: string; python: string; libtorch: Record<string, string> };
    cpu: string;
  };
  const v = st.versions;
  console.log("");
  const timing =
    o.paired === undefined
      ? `${o.warmup} warm-up + ${o.steps} timed steps x ${o.rounds} round(s) per library, model and layout`
      : `paired: ${o.warmup} warm-up steps per side, then ${o.paired} turns of one step per side (first side rotating)`;
  console.log(
    `settings: threads loco ${st.threads.loco} / PyTorch ${st.threads.pytorch}; ${timing}; ${st.clock} clock; ` +
      `SGD momentum 0.9, NT-Xent tau 0.5; ` +
      `PyTorch + jemalloc: LD_PRELOAD=${o.jemalloc ?? "-"} MALLOC_CONF=${JEMALLOC_CONF}`,
  );
  console.log(
    `loco peak tensor memory (MiB): ${Object.entries(st.locoPeakTensorMB)
      .map(([m, mb]) => `${m} ${mb.toFixed(0)}`)
      .join(", ")}; load average ${st.loadAverage.map((x) => x.toFixed(1)).join(" ")}; cpu ${st.cpu}`,
  );
  printPaired(o, result);
  console.log(
    `versions: loco ${v.loco} (Node ${v.node}), PyTorch ${v.torch} (Python ${v.python}); ` +
      `libtorch: loco ${v.libtorch.loco}, PyTorch ${v.libtorch.pytorch}`,
  );
}

main().catch((error: unknown) => {
  const usage = error instanceof RangeError ? `\n${USAGE}` : "";
  console.error(`${error instanceof Error ? error.message : String(error)}${usage}`);
  process.exit(error instanceof RangeError ? 2 : 1);
});
