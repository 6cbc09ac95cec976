// Experiment grids: the rows of the authors' response (methods × ablations, plus feedback
// alignment and the baselines), the protocols of the presets, and grid files (YAML or JSON).
import * as fs from "node:fs";
import * as path from "node:path";
import YAML from "yaml";

/** Flags of one `loco train` run, by kebab-case flag name (booleans: true → --flag, false → --no-flag). */
export type RunFlags = Record<string, string | number | boolean>;

export interface GridRow {
  name: string;
  flags: RunFlags;
  /** The paper's ImageNet linear top-1 (ResNet-50, 100 epochs) from the authors' response, or a remark. */
  reference?: string;
}

export interface ExperimentSpec {
  name: string;
  /** One line saying what every run shares (for the tables and the report). */
  protocol: string;
  /** Flags every run gets (a row's own flags override them). */
  protocolFlags: RunFlags;
  seeds: number[];
  rows: GridRow[];
  /** Baselines read out beside the first row's runs (one set per seed). */
  baselines: string[];
  /**
   * Fine-tuning after pretraining (`loco finetune` on every finished run, and from random init
   * beside the first row's runs): label fractions and `loco finetune` flags. Absent: none.
   */
  finetune?: FinetuneSpec;
}

export interface FinetuneSpec {
  /** Fractions of the labelled train images, each in (0, 1]. */
  fractions: number[];
  /** Flags of `loco finetune` (epochs, lr, …) by kebab-case name. */
  flags: RunFlags;
}

/** The rows of the authors' response, in its order, with its ImageNet figures. */
export const RESPONSE_GRID: GridRow[] = [
  { name: "SimCLR, 2-layer MLP", flags: { method: "simclr" }, reference: "65.7" },
  { name: "SimCLR, 4-layer MLP", flags: { method: "simclr", "mlp-layers": 4 }, reference: "67.1" },
  { name: "GIM, 2-layer MLP", flags: { method: "gim" }, reference: "60.9" },
  { name: "GIM, 4-layer MLP", flags: { method: "gim", "mlp-layers": 4 }, reference: "62.3" },
  { name: "sharing only", flags: { method: "loco", "conv-blocks": 0 }, reference: "64.9" },
  { name: "conv decoder only", flags: { method: "gim", "conv-blocks": 1 }, reference: "65.2" },
  { name: "LoCo, 2-layer MLP", flags: { method: "loco" }, reference: "66.2" },
  { name: "LoCo, 4-layer MLP", flags: { method: "loco", "mlp-layers": 4 }, reference: "67.5" },
  {
    name: "SimCLR + conv block in decoder",
    flags: { method: "simclr", "conv-blocks": 1 },
    reference: "no gain (no figure)",
  },
  { name: "GIM, sequential", flags: { method: "gim", schedule: "sequential" }, reference: "not run" },
  { name: "LoCo, sequential", flags: { method: "loco", schedule: "sequential" }, reference: "not run" },
  {
    name: "SimCLR, feedback alignment",
    flags: { method: "simclr", feedback: "alignment" },
    reference: "not run (promised, R4)",
  },
];

export const REFERENCE_TITLE = "paper ImageNet top-1 (ResNet-50, 100 ep; other scale)";
export const BASELINE_REFERENCES: Record<string, string> = {
  "random init": "-",
  supervised: "-",
  "raw pixels": "-",
};

export const PRESET_NAMES = ["quick", "standard", "paper"] as const;
export type PresetName = (typeof PRESET_NAMES)[number];

const ALL_BASELINES = ["random-init", "supervised", "raw-pixels"];

/** The presets: the whole grid under one protocol each. */
export function presetSpec(name: PresetName): ExperimentSpec {
  switch (name) {
    case "quick":
      return {
        name: "quick",
        protocol:
          "Fashion-MNIST, 5,000 pretraining images, ResNet-18 width 16 (CIFAR stem), 3 epochs, batch 128, LARS, 1 seed",
        protocolFlags: {
          dataset: "fashion-mnist",
          "train-subset": 5000,
          width: 16,
          epochs: 3,
          "batch-size": 128,
          "knn-every": 1,
          "knn-train-size": 2000,
          "knn-test-size": 1000,
          "readout-epochs": 20,
          "readout-train-size": 5000,
          "supervised-epochs": 3,
          "per-stage": true,
        },
        seeds: [0],
        rows: RESPONSE_GRID,
        baselines: ALL_BASELINES,
        // 600 labelled images, 10 epochs: a short version of the 1% protocol that fits the budget.
        finetune: { fractions: [0.01], flags: { epochs: 10 } },
      };
    case "standard":
      // Sized so that the whole grid, 3 seeds, fits one sitting on 2 quiet cores with --jobs 2:
      // estimated at about 1 h 50 min from the quick grid, measured at about 1 h 30 min
      // (docs/results.md, "What the standard grid cost"). Quick's width, batch and epochs; 3x its images; 3 seeds. A longer
      // schedule is a grid file away (examples/standard-long.yaml).
      return {
        name: "standard",
        protocol:
          "Fashion-MNIST, 15,000 pretraining images, ResNet-18 width 16 (CIFAR stem), 3 epochs, batch 128, LARS, 3 seeds; about 1 h 30 min for the whole grid with --jobs 2 on 2 idle cores",
        protocolFlags: {
          dataset: "fashion-mnist",
          "train-subset": 15000,
          width: 16,
          epochs: 3,
          "batch-size": 128,
          "knn-every": 1,
          "knn-train-size": 2000,
          "knn-test-size": 1000,
          "readout-epochs": 50,
          "readout-train-size": 10000,
          "supervised-epochs": 3,
          "per-stage": true,
        },
        seeds: [0, 1, 2],
        rows: RESPONSE_GRID,
        baselines: ALL_BASELINES,
        // 20 epochs on 600 labelled images (1%): the default recipe (60 epochs, and 10% of the labels)
        // would cost more than the pretraining itself.
        finetune: { fractions: [0.01], flags: { epochs: 20 } },
      };
    case "paper":
      return {
        name: "paper",
        protocol:
          "an ImageNet-style image folder (--data-dir) at 224 px, ResNet-50 width 64, 100 epochs, batch 256, LARS, temperature 0.1, 1 seed",
        protocolFlags: {
          dataset: "folder",
          "image-size": 224,
          "train-subset": 0,
          encoder: "resnet50",
          width: 64,
          epochs: 100,
          "batch-size": 256,
          optimizer: "lars",
          temperature: "0.1",
          "warmup-epochs": 10,
          "knn-every": 10,
          "readout-epochs": 90,
          "readout-train-size": 0,
          "supervised-epochs": 90,
          "per-stage": true,
        },
        seeds: [0],
        rows: RESPONSE_GRID,
        baselines: ALL_BASELINES,
        finetune: { fractions: [0.01, 0.1], flags: {} },
      };
  }
}

/** A problem in a grid file: the message names the file and field. */
export class GridError extends Error {
  override name = "GridError";
  readonly userFacing = true;
  readonly exitCode = 2;
}

function checkFlags(value: unknown, where: string): RunFlags {
  if (value === undefined) return {};
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new GridError(`${where}: expected an object of loco train flags`);
  }
  for (const [k, v] of Object.entries(value)) {
    if (!["string", "number", "boolean"].includes(typeof v)) {
      throw new GridError(`${where}.${k}: expected a string, number or boolean, got ${JSON.stringify(v)}`);
    }
  }
  return value as RunFlags;
}

/** A grid file's `finetune`: a list of fractions, an object {fractions, flags}, or [] / null for none. */
function checkFinetune(value: unknown, where: string): FinetuneSpec | undefined {
  if (value === null) return undefined;
  const object = Array.isArray(value)
    ? { fractions: value }
    : typeof value === "object"
      ? (value as Record<string, unknown>)
      : null;
  if (object === null) throw new GridError(`${where}: expected a list of label fractions or {fractions, flags}`);
  for (const k of Object.keys(object)) {
    if (k !== "fractions" && k !== "flags")
      throw new GridError(`${where}: unknown field '${k}' (expected fractions, flags)`);
  }
  const fractions = object.fractions;
  if (!Array.isArray(fractions) || !fractions.every((f) => typeof f === "number" && f > 0 && f <= 1)) {
    throw new GridError(`${where}.fractions: expected a list of label fractions in (0, 1], e.g. [0.01, 0.1]`);
  }
  if (fractions.length === 0) return undefined;
  const flags = checkFlags(object.flags, `${where}.flags`);
  for (const k of ["fraction", "from-random-init", "seed"]) {
    if (k in flags)
      throw new GridError(`${where}.flags.${k}: set by the grid (fractions, the random-init row, the run's seed)`);
  }
  return { fractions: [...new Set(fractions as number[])], flags };
}

/**
 * Reads a grid file. Fields: name, preset (quick | standard | paper: the base protocol, seeds and
 * rows), protocol (flags for every run), seeds, rows ([{name, flags}]; default: the preset's),
 * baselines (list; default all three), finetune (label fractions, or {fractions, flags}; default:
 * the preset's; [] for none). Unknown fields are errors.
 */
export function readGridFile(file: string): ExperimentSpec {
  let raw: unknown;
  try {
    const text = fs.readFileSync(file, "utf8");
    raw = file.endsWith(".json") ? JSON.parse(text) : YAML.parse(text);
  } catch (error) {
    throw new GridError(`${file}: cannot read the grid (${(error as Error).message})`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw new GridError(`${file}: expected an object`);
  const g = raw as Record<string, unknown>;
  const known = ["name", "preset", "protocol", "description", "seeds", "rows", "baselines", "finetune"];
  for (const k of Object.keys(g)) {
    if (!known.includes(k)) throw new GridError(`${file}: unknown field '${k}' (expected ${known.join(", ")})`);
  }
  const presetName = g.preset ?? "quick";
  if (!PRESET_NAMES.includes(presetName as PresetName)) {
    throw new GridError(
      `${file}: preset: expected one of ${PRESET_NAMES.join(", ")}, got ${JSON.stringify(presetName)}`,
    );
  }
  const base = presetSpec(presetName as PresetName);
  const protocolFlags = { ...base.protocolFlags, ...checkFlags(g.protocol, `${file}: protocol`) };
  let seeds = base.seeds;
  if (g.seeds !== undefined) {
    if (!Array.isArray(g.seeds) || g.seeds.length === 0 || !g.seeds.every((s) => Number.isInteger(s) && s >= 0)) {
      throw new GridError(`${file}: seeds: expected a non-empty list of integers >= 0`);
    }
    seeds = g.seeds as number[];
  }
  let rows = base.rows;
  if (g.rows !== undefined) {
    if (!Array.isArray(g.rows) || g.rows.length === 0) throw new GridError(`${file}: rows: expected a non-empty list`);
    rows = g.rows.map((r: unknown, i: number) => {
      const row = r as Record<string, unknown> | null;
      if (row === null || typeof row !== "object" || typeof row.name !== "string" || row.name === "") {
        throw new GridError(`${file}: rows[${i}]: expected {name, flags}`);
      }
      return {
        name: row.name,
        flags: checkFlags(row.flags, `${file}: rows[${i}].flags`),
        reference: typeof row.reference === "string" ? row.reference : undefined,
      };
    });
    const names = rows.map((r) => r.name);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup !== undefined) throw new GridError(`${file}: rows: the name '${dup}' is used twice`);
  }
  let baselines = base.baselines;
  if (g.baselines !== undefined) {
    if (!Array.isArray(g.baselines) || !g.baselines.every((b) => ALL_BASELINES.includes(b as string))) {
      throw new GridError(`${file}: baselines: expected a list of ${ALL_BASELINES.join(", ")}`);
    }
    baselines = g.baselines as string[];
  }
  const finetune = g.finetune === undefined ? base.finetune : checkFinetune(g.finetune, `${file}: finetune`);
  return {
    name: typeof g.name === "string" ? g.name : path.basename(file).replace(/\.(ya?ml|json)$/, ""),
    protocol:
      typeof g.description === "string" ? g.description : `${base.protocol} (changed by ${path.basename(file)})`,
    protocolFlags,
    seeds,
    rows,
    baselines,
    ...(finetune === undefined ? {} : { finetune }),
  };
}

/** A file-system-safe name of a row. */
export function slug(name: string): string {
  return name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-|-$/g, "");
}

/** A fraction as a percentage label: 0.01 → "1%". */
export function percentLabel(fraction: number): string {
  return `${+(fraction * 100).toPrecision(3)}%`;
}

/** The argv of `loco train` for flags (booleans as --flag / --no-flag). */
export function flagArgs(flags: RunFlags): string[] {
  return Object.entries(flags).flatMap(([k, v]) =>
    typeof v === "boolean" ? [v ? `--${k}` : `--no-${k}`] : [`--${k}`, String(v)],
  );
}
