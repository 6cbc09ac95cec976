// `npm run bench:parallel` (bench/parallel.ts) end to end on a tiny model in 2 rounds: every pair
// (one process and 2 ranks per case; LoCo alone and two at once for the ceiling) measured in each
// round, the order flipped from one round to the next, each round's speedup taken against its own
// one-process run, and the headline figures the rounds' medians (for 2 rounds: their mean).
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { medianOf } from "../bench/parallel-rounds";

const script = path.join(__dirname, "..", "bench", "parallel.js");
const env = { ...process.env, OMP_NUM_THREADS: "1", LOCO_NUM_THREADS: "1" };

const close = (actual: number, expected: number, what: string, tolerance = 0.011): void =>
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what}: ${actual} vs ${expected}`);

interface Round {
  oneRankFirst: boolean;
  imagesPerSecond: number;
  oneRankImagesPerSecond: number;
  speedup: number;
  waitShare: number[];
}

test("medianOf: field by field and element by element; other values from the first record", () => {
  const records = [
    { name: "a", x: 3, v: [1, 10], o: { y: 5 } },
    { name: "b", x: 1, v: [2, 30], o: { y: 7 } },
    { name: "c", x: 2, v: [3, 20], o: { y: 6 } },
  ];
  assert.deepEqual(medianOf(records), { name: "a", x: 2, v: [2, 20], o: { y: 6 } });
  assert.equal(medianOf([4, 1]), 2.5);
});

test("bench:parallel --rounds 2: each pair in every round, alternating order, medians of the rounds", () => {
  const tiny = ["--depth", "18", "--width", "2", "--size", "8", "--images", "4", "--repeats", "1"];
  const args = [...tiny, "--warmup", "1", "--steps", "2", "--search", "0", "--rounds", "2", "--json"];
  const out = spawnSync(process.execPath, [script, ...args], { env, encoding: "utf8", timeout: 180000 });
  assert.equal(out.status, 0, out.stderr);
  const r = JSON.parse(out.stdout) as {
    rounds: number;
    ceiling: {
      ceilingSpeedup: number;
      ceilingSpeedupRange: number[];
      rounds: { aloneFirst: boolean; ceilingSpeedup: number }[];
    };
    measured: { name: string; speedup: number; speedupRange: number[]; waitShare: number[]; rounds: Round[] }[];
    check: { name: string; measuredSpeedup: number }[];
  };
  assert.equal(r.rounds, 2);
  assert.deepEqual(
    r.ceiling.rounds.map((x) => x.aloneFirst),
    [true, false],
  );
  const ceilings = r.ceiling.rounds.map((x) => x.ceilingSpeedup);
  close(r.ceiling.ceilingSpeedup, (ceilings[0] + ceilings[1]) / 2, "ceiling: median");
  assert.deepEqual(r.ceiling.ceilingSpeedupRange, [Math.min(...ceilings), Math.max(...ceilings)]);
  assert.deepEqual(
    r.measured.map((m) => m.name),
    ["end to end", "GIM", "LoCo sync", "LoCo pipelined"],
  );
  for (const [i, m] of r.measured.entries()) {
    assert.deepEqual(
      m.rounds.map((x) => x.oneRankFirst),
      [true, false],
      m.name,
    );
    for (const x of m.rounds) {
      close(x.speedup, x.imagesPerSecond / x.oneRankImagesPerSecond, `${m.name}: a round's speedup`, 0.006);
      for (const w of x.waitShare) assert.ok(w >= 0 && w <= 1, `${m.name}: wait share ${w}`);
    }
    const speedups = m.rounds.map((x) => x.speedup);
    close(m.speedup, (speedups[0] + speedups[1]) / 2, `${m.name}: median speedup`);
    assert.deepEqual(m.speedupRange, [Math.min(...speedups), Math.max(...speedups)], m.name);
    for (const rank of [0, 1]) {
      const waits = m.rounds.map((x) => x.waitShare[rank]);
      close(m.waitShare[rank], (waits[0] + waits[1]) / 2, `${m.name}: rank ${rank}'s median wait`, 0.001);
    }
    assert.equal(r.check[i].measuredSpeedup, m.speedup, `${m.name}: the simulator checked against the median`);
  }
});

test("bench:parallel: a bad --rounds is a usage error (status 2)", () => {
  const out = spawnSync(process.execPath, [script, "--rounds", "0"], { env, encoding: "utf8" });
  assert.equal(out.status, 2);
  assert.match(out.stderr, /--rounds: expected an integer of at least 1, got '0'/);
});
