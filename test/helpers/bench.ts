// Runs a compiled bench script (dist/bench/NAME.js) in a child process with one libtorch thread and
// returns its JSON report; a failed run fails the calling test with the script's last output.
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";

export function runBenchJson<T>(name: string, args: string[]): T {
  const script = path.join(__dirname, "..", "..", "bench", `${name}.js`);
  const r = spawnSync(process.execPath, [script, ...args], {
    encoding: "utf8",
    timeout: 300_000,
    env: { ...process.env, OMP_NUM_THREADS: "1", LOCO_NUM_THREADS: "1" },
  });
  assert.equal(r.status, 0, r.stderr.slice(-2000));
  return JSON.parse(r.stdout) as T;
}
