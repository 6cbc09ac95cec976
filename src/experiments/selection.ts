// Which part of a grid one `loco experiment` invocation runs (--rows, --seeds), so that a long grid
// can be run in pieces over several sessions, and the identity of the grid an experiment directory
// holds: a directory never mixes two protocols, and a mismatch names the field that differs.
import { type ExperimentSpec, type FinetuneSpec, type GridRow, type RunFlags, GridError, slug } from "./grid";

/** The rows and seeds one invocation runs (by default all of the grid's). */
export interface Selection {
  rows: GridRow[];
  seeds: number[];
}

/** The 1-based id of a row (its position in the grid), as `--rows` and `--list` use it. */
export function rowId(spec: ExperimentSpec, name: string): number {
  return spec.rows.findIndex((r) => r.name === name) + 1;
}

/**
 * `--rows`: comma-separated 1-based row ids, ranges of ids (`2-4`) or row names written as slugs
 * (`gim-2-layer-mlp`, as `--list` prints them); a whole row name (`"GIM, 2-layer MLP"`) also works.
 */
export function selectRows(spec: ExperimentSpec, value: string | undefined): GridRow[] {
  if (value === undefined) return spec.rows;
  const bySlug = new Map(spec.rows.map((r, i) => [slug(r.name), i]));
  const whole = bySlug.get(slug(value));
  if (whole !== undefined) return [spec.rows[whole]];
  const n = spec.rows.length;
  const chosen = new Set<number>();
  for (const raw of value.split(",")) {
    const token = raw.trim();
    if (token === "") continue;
    const range = /^(\d+)(?:-(\d+))?$/.exec(token);
    if (range !== null) {
      const first = Number(range[1]);
      const last = Number(range[2] ?? range[1]);
      if (first < 1 || last > n || first > last) {
        throw new GridError(`--rows: '${token}' is not a row id or a range of row ids in 1-${n}`);
      }
      for (let i = first; i <= last; i++) chosen.add(i - 1);
      continue;
    }
    const i = bySlug.get(slug(token));
    if (i === undefined) {
      throw new GridError(
        `--rows: no row '${token}' in the grid '${spec.name}' (expected row ids 1-${n}, ranges such as 2-4, or names such as ${slug(spec.rows[0].name)}; --list shows them)`,
      );
    }
    chosen.add(i);
  }
  if (chosen.size === 0) throw new GridError(`--rows: expected row ids or names, got '${value}'`);
  return spec.rows.filter((_, i) => chosen.has(i));
}

/** `--seeds`: a subset of the grid's seeds (a seed the grid does not have is an error). */
export function selectSeeds(spec: ExperimentSpec, seeds: number[] | undefined): number[] {
  if (seeds === undefined) return spec.seeds;
  for (const s of seeds) {
    if (!spec.seeds.includes(s)) {
      throw new GridError(`--seeds: seed ${s} is not in the grid '${spec.name}' (its seeds: ${spec.seeds.join(", ")})`);
    }
  }
  return spec.seeds.filter((s) => seeds.includes(s));
}

/** What defines a grid's results: two invocations into one directory must agree on all of it. */
export interface GridIdentity {
  name: string;
  protocol: RunFlags;
  rows: { name: string; flags: RunFlags }[];
  seeds: number[];
  baselines: string[];
  finetune: FinetuneSpec | null;
}

export function gridIdentity(spec: ExperimentSpec): GridIdentity {
  return {
    name: spec.name,
    protocol: spec.protocolFlags,
    rows: spec.rows.map((r) => ({ name: r.name, flags: r.flags })),
    seeds: spec.seeds,
    baselines: spec.baselines,
    finetune: spec.finetune ?? null,
  };
}

/** The identity string of experiment.json files written before `grid` was stored (finetune not in it). */
export function legacyIdentity(spec: ExperimentSpec): string {
  return JSON.stringify({
    p: spec.protocolFlags,
    r: spec.rows.map((r) => [r.name, r.flags]),
    s: spec.seeds,
    b: spec.baselines,
  });
}

export interface GridDifference {
  /** Dotted path of the field: `protocol.epochs`, `rows[3].flags.method`, `seeds`, `finetune.flags.epochs`. */
  field: string;
  saved: unknown;
  current: unknown;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

/** The first field where two values differ (objects by key, arrays of objects by element), or null. */
function firstDifference(saved: unknown, current: unknown, field: string): GridDifference | null {
  if (isObject(saved) && isObject(current)) {
    // In this command's order (the grid's name first), then the fields only the directory has.
    const keys = [...new Set([...Object.keys(current), ...Object.keys(saved)])];
    for (const k of keys) {
      const d = firstDifference(saved[k], current[k], field === "" ? k : `${field}.${k}`);
      if (d !== null) return d;
    }
    return null;
  }
  const objects = (a: unknown): a is unknown[] => Array.isArray(a) && a.some(isObject);
  if (objects(saved) && objects(current) && saved.length === current.length) {
    for (let i = 0; i < saved.length; i++) {
      const d = firstDifference(saved[i], current[i], `${field}[${i}]`);
      if (d !== null) return d;
    }
    return null;
  }
  return JSON.stringify(saved) === JSON.stringify(current) ? null : { field, saved, current };
}

/** Where the grid saved in an experiment directory and this command's grid differ, or null. */
export function gridDifference(saved: GridIdentity, current: GridIdentity): GridDifference | null {
  return firstDifference(saved, current, "");
}

const shown = (v: unknown): string => (v === undefined ? "(not set)" : JSON.stringify(v));

/**
 * Refuses to run a grid in a directory that holds another one (exit status 2), naming the first
 * field that differs. `saved` is the directory's experiment.json (null: a new directory).
 */
export function checkSameGrid(dir: string, saved: Record<string, unknown> | null, spec: ExperimentSpec): void {
  if (saved === null) return;
  const info = `${dir}/experiment.json`;
  const advice = `A directory holds one grid under one protocol: use another --dir, or remove ${info} to start over.`;
  if (isObject(saved.grid)) {
    const d = gridDifference(saved.grid as unknown as GridIdentity, gridIdentity(spec));
    if (d === null) return;
    const rowIndex = /^rows\[(\d+)\]/.exec(d.field);
    const rowName = rowIndex === null ? undefined : (saved.grid.rows as { name?: string }[])[Number(rowIndex[1])]?.name;
    throw new GridError(
      `${dir} holds the experiment '${String(saved.grid.name)}' with another ${d.field}${rowName === undefined ? "" : ` (row '${rowName}')`}: ` +
        `${shown(d.saved)} there, ${shown(d.current)} in this command's grid '${spec.name}'. ${advice}`,
    );
  }
  if (typeof saved.identity === "string" && saved.identity !== legacyIdentity(spec)) {
    throw new GridError(`${dir} holds another experiment (its grid or protocol differ). ${advice}`);
  }
}
