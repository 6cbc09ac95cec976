// Reads bench/opcount.cpp's output and compares two sides op by op, for bench/engine_ops.ts.
import * as fs from "node:fs";

export const PHASES = ["forward", "backward", "optimizer"] as const;
export type Phase = (typeof PHASES)[number];
/** "top": top-level events, inclusive times (they add up to the phase with "outside"); "self": every
 * event by name at any depth, its own time without its children's (they add up the same way). */
export type View = "top" | "self";
export type Clock = "wall" | "cpu";

/** Microseconds of wall and thread CPU time, and minor page faults. */
export interface Cost {
  wall: number;
  cpu: number;
  faults: number;
}

interface OpLine {
  phase: string;
  depth: number;
  kind: "op" | "node";
  name: string;
  count: number;
  inclusive: Cost;
  self: Cost;
}

/** One side's totals over every recorded step (of all rounds so far). */
export interface Profile {
  steps: Record<Phase, number>;
  phases: Record<Phase, Cost>;
  lines: OpLine[];
}

const zero = (): Cost => ({ wall: 0, cpu: 0, faults: 0 });
const add = (a: Cost, b: Cost): Cost => ({ wall: a.wall + b.wall, cpu: a.cpu + b.cpu, faults: a.faults + b.faults });

export function emptyProfile(): Profile {
  return {
    steps: { forward: 0, backward: 0, optimizer: 0 },
    phases: { forward: zero(), backward: zero(), optimizer: zero() },
    lines: [],
  };
}

const isPhase = (p: string): p is Phase => (PHASES as readonly string[]).includes(p);

/** Adds one opcount file to `into` (rounds accumulate). */
export function readOpcount(file: string, into: Profile): void {
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    const f = line.split("\t");
    if (f[0] === "P" && isPhase(f[1])) {
      into.steps[f[1]] += Number(f[2]);
      into.phases[f[1]] = add(into.phases[f[1]], { wall: Number(f[3]), cpu: Number(f[4]), faults: Number(f[5]) });
    } else if (f[0] === "O" && f.length === 12) {
      into.lines.push({
        phase: f[1],
        depth: Number(f[2]),
        kind: f[3] === "node" ? "node" : "op",
        name: f[4],
        count: Number(f[5]),
        inclusive: { wall: Number(f[6]), cpu: Number(f[8]), faults: Number(f[10]) },
        self: { wall: Number(f[7]), cpu: Number(f[9]), faults: Number(f[11]) },
      });
    }
  }
}

/** Per step: count and cost by (kind, name) in one phase and view. */
function grouped(p: Profile, phase: Phase, view: View): Map<string, { count: number; cost: Cost }> {
  const out = new Map<string, { count: number; cost: Cost }>();
  const steps = Math.max(1, p.steps[phase]);
  for (const l of p.lines) {
    if (l.phase !== phase || (view === "top" && l.depth !== 0)) continue;
    // The autograd engine wraps each node in an op named after it: show it as the node.
    const evaluate = l.name.startsWith("autograd::engine::evaluate_function: ");
    const kind = evaluate ? "node" : l.kind;
    const name = evaluate ? l.name.slice("autograd::engine::evaluate_function: ".length) : l.name;
    const key = `${kind}\t${evaluate ? `${name} (with engine)` : name}`;
    const cost = view === "top" ? l.inclusive : l.self;
    const prev = out.get(key) ?? { count: 0, cost: zero() };
    out.set(key, {
      count: prev.count + l.count / steps,
      cost: add(prev.cost, { wall: cost.wall / steps, cpu: cost.cpu / steps, faults: cost.faults / steps }),
    });
  }
  return out;
}

export interface Row {
  kind: string;
  name: string;
  countA: number;
  countB: number;
  /** Per step: milliseconds of the chosen clock, minor faults. */
  msA: number;
  msB: number;
  faultsA: number;
  faultsB: number;
}

export interface PhaseTable {
  phase: Phase;
  view: View;
  /** Sorted by |msA - msB|, largest first; then "outside any operator". Sum: the phase totals. */
  rows: Row[];
  totalA: Cost;
  totalB: Cost;
}

const ms = (c: Cost, clock: Clock): number => (clock === "wall" ? c.wall : c.cpu) / 1e3;

/** Per-step phase totals (µs and faults) of one side. */
export function phaseCost(p: Profile, phase: Phase): Cost {
  const s = Math.max(1, p.steps[phase]);
  const c = p.phases[phase];
  return { wall: c.wall / s, cpu: c.cpu / s, faults: c.faults / s };
}

export function phaseTable(a: Profile, b: Profile, phase: Phase, view: View, clock: Clock): PhaseTable {
  const ga = grouped(a, phase, view);
  const gb = grouped(b, phase, view);
  const rows: Row[] = [];
  let inOpsA = zero();
  let inOpsB = zero();
  for (const key of new Set([...ga.keys(), ...gb.keys()])) {
    const [kind, name] = key.split("\t");
    const ea = ga.get(key) ?? { count: 0, cost: zero() };
    const eb = gb.get(key) ?? { count: 0, cost: zero() };
    inOpsA = add(inOpsA, ea.cost);
    inOpsB = add(inOpsB, eb.cost);
    rows.push({
      kind,
      name,
      countA: ea.count,
      countB: eb.count,
      msA: ms(ea.cost, clock),
      msB: ms(eb.cost, clock),
      faultsA: ea.cost.faults,
      faultsB: eb.cost.faults,
    });
  }
  rows.sort((x, y) => Math.abs(y.msA - y.msB) - Math.abs(x.msA - x.msB));
  const totalA = phaseCost(a, phase);
  const totalB = phaseCost(b, phase);
  rows.push({
    kind: "-",
    name: "outside any operator",
    countA: 0,
    countB: 0,
    msA: ms(totalA, clock) - ms(inOpsA, clock),
    msB: ms(totalB, clock) - ms(inOpsB, clock),
    faultsA: totalA.faults - inOpsA.faults,
    faultsB: totalB.faults - inOpsB.faults,
  });
  return { phase, view, rows, totalA, totalB };
}

const fmtCount = (n: number): string => (Number.isInteger(n) ? String(n) : n.toFixed(1));

/** The table as text: `top` rows by |difference|, the rest summed, "outside", the total. */
export function formatTable(t: PhaseTable, clock: Clock, top: number, names: [string, string]): string {
  const gap = ms(t.totalA, clock) - ms(t.totalB, clock);
  const header = [
    "kind",
    `${t.phase}: ${t.view === "top" ? "top-level events (inclusive)" : "every event by name (self time)"}`,
    `n/step ${names[0]}`,
    `n/step ${names[1]}`,
    `ms ${names[0]}`,
    `ms ${names[1]}`,
    "diff ms",
    "share of gap",
    `faults ${names[0]}`,
    `faults ${names[1]}`,
  ];
  const cells = (r: Row): string[] => [
    r.kind,
    r.name + (r.countA !== r.countB && r.kind !== "-" ? " *" : ""),
    r.kind === "-" ? "" : fmtCount(r.countA),
    r.kind === "-" ? "" : fmtCount(r.countB),
    r.msA.toFixed(2),
    r.msB.toFixed(2),
    (r.msA - r.msB).toFixed(2),
    gap === 0 ? "" : `${(((r.msA - r.msB) / gap) * 100).toFixed(0)}%`,
    r.faultsA.toFixed(0),
    r.faultsB.toFixed(0),
  ];
  const ops = t.rows.filter((r) => r.kind !== "-");
  const outside = t.rows.filter((r) => r.kind === "-");
  const shown = ops.slice(0, top);
  const rest = ops.slice(top);
  const sum = (k: "msA" | "msB" | "faultsA" | "faultsB"): number => rest.reduce((s, r) => s + r[k], 0);
  const restRow: Row = {
    kind: "",
    name: `(${rest.length} others)`,
    countA: rest.reduce((s, r) => s + r.countA, 0),
    countB: rest.reduce((s, r) => s + r.countB, 0),
    msA: sum("msA"),
    msB: sum("msB"),
    faultsA: sum("faultsA"),
    faultsB: sum("faultsB"),
  };
  const total: Row = {
    kind: "=",
    name: "phase total",
    countA: 0,
    countB: 0,
    msA: ms(t.totalA, clock),
    msB: ms(t.totalB, clock),
    faultsA: t.totalA.faults,
    faultsB: t.totalB.faults,
  };
  const body = [...shown, ...(rest.length > 0 ? [restRow] : []), ...outside, total].map((r) => {
    const c = cells(r);
    if (r.kind === "=" || r.kind === "") c[2] = c[3] = r.kind === "" ? c[2] : "";
    return c;
  });
  return alignRows([header, ...body]);
}

export function alignRows(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r: string[]): string =>
    r.map((cell, c) => (c < 2 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join("  ");
  return [line(rows[0]), widths.map((w) => "-".repeat(w)).join("  "), ...rows.slice(1).map(line)].join("\n");
}
