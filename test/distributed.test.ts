// Process groups on c10d: two ranks as child processes on 127.0.0.1 (one libtorch thread each)
// compute every collective, send/recv (blocking and with a work handle) and the differentiable
// collectives; the results must equal the single-process computation from both ranks' inputs.
// Fault tests: a rank killed with an operation in flight, a rank that stalls before an operation,
// and a rank that never arrives at the rendezvous each make the other fail with an error naming the
// rank and the operation, within the timeout (plus the ~1 s heartbeat diagnosis), never a hang.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as path from "node:path";
import { type Tensor } from "../src/torch";
import { DistributedConfigError, resolveInitOptions } from "../src/torch/distributed";
import { rankInput, rankWeights } from "./helpers/dist-worker";
import { type RankOutcome, freePort, runRanks } from "./helpers/ranks";

const worker = path.join(__dirname, "helpers", "dist-worker.js");
const flat = (t: Tensor): number[] => t.toArray();

function assertClose(actual: unknown, expected: number[], what: string): void {
  const a = actual as number[];
  assert.equal(a.length, expected.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) {
    assert.ok(
      Math.abs(a[i] - expected[i]) <= 1e-5 * Math.max(1, Math.abs(expected[i])),
      `${what}[${i}]: ${a[i]} vs ${expected[i]}`,
    );
  }
}

function show(outcomes: RankOutcome[]): string {
  return outcomes
    .map((o) => `rank ${o.rank} (code ${o.code}, signal ${o.signal}):\n${o.stdout}\n${o.stderr}`)
    .join("\n");
}

describe("process groups on c10d (2 ranks)", () => {
  test("collectives, send/recv and differentiable collectives equal the single-process computation", async () => {
    const outcomes = await runRanks(worker, "operations", { worldSize: 2, port: await freePort(), timeoutMs: 30000 });
    for (const o of outcomes) assert.equal(o.code, 0, show(outcomes));
    const [x0, x1] = [rankInput(0), rankInput(1)];
    const expected = {
      sum: flat(x0.add(x1)),
      avg: flat(x0.add(x1).div(2)),
      max: flat(x0.maximum(x1)),
      min: flat(x0.minimum(x1)),
      product: flat(x0.mul(x1)),
      sumInt64: [3, 10],
      broadcast: flat(x1),
    };
    for (const o of outcomes) {
      const r = o.result!;
      for (const [key, value] of Object.entries(expected)) assertClose(r[key], value, `rank ${o.rank} ${key}`);
      const gathered = r.allGather as number[][];
      assertClose(gathered[0], flat(x0), `rank ${o.rank} allGather[0]`);
      assertClose(gathered[1], flat(x1), `rank ${o.rank} allGather[1]`);
      // allGatherWithGrad: y = cat(x0, x1); loss_r = Σ y·w_r, so ∂(Σ_r loss_r)/∂x_k is rows of Σ_r w_r.
      assertClose(r.gatherWithGrad, [...flat(x0), ...flat(x1)], `rank ${o.rank} gatherWithGrad`);
      const weightSum = rankWeights(0, 2).add(rankWeights(1, 2));
      assertClose(r.gatherGrad, flat(weightSum.narrow(0, 2 * o.rank, 2)), `rank ${o.rank} gatherGrad`);
      // allReduceWithGrad: s = x0 + x1; loss_r = Σ s²·v_r, so ∂(Σ_r loss_r)/∂x_k = 2 s (v_0 + v_1).
      const s = x0.add(x1);
      const v = rankWeights(0, 2)
        .narrow(0, 0, 2)
        .add(rankWeights(1, 2).narrow(0, 0, 2));
      assertClose(r.reduceWithGrad, flat(s), `rank ${o.rank} reduceWithGrad`);
      assertClose(r.reduceGrad, flat(s.mul(v).mul(2)), `rank ${o.rank} reduceGrad`);
    }
    const rank1 = outcomes[1].result!;
    assertClose(rank1.recv, flat(x0.add(100)), "blocking recv");
    assertClose(rank1.recvAsync, flat(x0.mul(-1)), "recv through a work handle");
  });

  test("a rank killed with an operation in flight makes the other fail, naming it, within the timeout", async () => {
    const timeoutMs = 4000;
    const outcomes = await runRanks(worker, "killed", { worldSize: 2, port: await freePort(), timeoutMs });
    assert.equal(outcomes[1].signal, "SIGKILL", show(outcomes));
    const survivor = outcomes[0];
    assert.equal(survivor.code, 1, show(outcomes));
    const { error, elapsedMs } = survivor.result as { error: string; elapsedMs: number };
    assert.match(error, /^allReduce #2 failed on rank 0 of 2/);
    assert.match(error, /rank 1 is not responding/);
    assert.ok(elapsedMs < timeoutMs + 1500, `failed after ${elapsedMs} ms`);
  });

  test("when rank 0 (the store's host) dies, the other rank says so", async () => {
    const timeoutMs = 4000;
    const outcomes = await runRanks(worker, "killed", {
      worldSize: 2,
      port: await freePort(),
      timeoutMs,
      extraEnv: { KILL_RANK: "0" },
    });
    assert.equal(outcomes[0].signal, "SIGKILL", show(outcomes));
    const { error, elapsedMs } = outcomes[1].result as { error: string; elapsedMs: number };
    assert.match(error, /^allReduce #2 failed on rank 1 of 2/);
    assert.match(error, /rank 0 is not responding \(its rendezvous store at 127\.0\.0\.1:\d+ cannot be reached/);
    assert.ok(elapsedMs < timeoutMs + 1500, `failed after ${elapsedMs} ms`);
  });

  test("a recv whose sender dies fails naming it, and the group refuses later operations", async () => {
    const timeoutMs = 4000;
    const outcomes = await runRanks(worker, "recvKilled", { worldSize: 2, port: await freePort(), timeoutMs });
    const r = outcomes[0].result as { error: string; elapsedMs: number; laterError: string; failure: string | null };
    assert.ok(r !== undefined, show(outcomes));
    assert.match(
      r.error,
      /^recv from rank 1 failed on rank 0 of 2 after [\d.]+ s \(timeout 4\.0 s\): rank 1 is not responding/,
    );
    assert.ok(r.elapsedMs < timeoutMs + 1500, `failed after ${r.elapsedMs} ms`);
    assert.equal(r.laterError, `barrier: the process group failed earlier and cannot be used: ${r.error}`);
    assert.equal(r.failure, null, "destroyed groups report no failure");
  });

  test("a rank that stalls before an operation makes the other time out, naming it", async () => {
    const timeoutMs = 3000;
    const outcomes = await runRanks(worker, "stalled", { worldSize: 2, port: await freePort(), timeoutMs });
    const survivor = outcomes[0];
    assert.equal(survivor.code, 1, show(outcomes));
    const { error, elapsedMs } = survivor.result as { error: string; elapsedMs: number };
    assert.match(error, /^allReduce #2 failed on rank 0 of 2 after/);
    assert.match(error, /rank 1 has not reached this operation \(rank 1 last entered barrier #1\)/);
    assert.match(error, /\(timeout 3\.0 s\)/);
    // It waits for the timeout, then fails (the slack is for a loaded machine's scheduling).
    assert.ok(elapsedMs >= timeoutMs - 100 && elapsedMs < timeoutMs + 3000, `failed after ${elapsedMs} ms`);
  });

  test("a rank that never arrives at the rendezvous times out with a clear error", async () => {
    const timeoutMs = 2000;
    const port = await freePort();
    const [alone] = await runRanks(worker, "operations", { worldSize: 2, ranks: [0], port, timeoutMs });
    assert.equal(alone.code, 1, show([alone]));
    const { error, elapsedMs } = alone.result as { error: string; elapsedMs: number };
    assert.equal(
      error,
      `rendezvous at 127.0.0.1:${port} timed out after 2.0 s on rank 0: rank 1 never arrived (world size 2)`,
    );
    assert.ok(elapsedMs < timeoutMs + 1500, `failed after ${elapsedMs} ms`);
    // Without rank 0 (the store's host), rank 1 cannot connect at all.
    const [orphan] = await runRanks(worker, "operations", { worldSize: 2, ranks: [1], port, timeoutMs });
    assert.equal(orphan.code, 1, show([orphan]));
    assert.match(
      (orphan.result as { error: string }).error,
      new RegExp(`^rendezvous: rank 1 could not reach rank 0's store at 127\\.0\\.0\\.1:${port} within 2\\.0 s`),
    );
  });

  test("TORCH_DISTRIBUTED_DEBUG=DETAIL reports collectives whose shapes differ between ranks", async () => {
    const outcomes = await runRanks(worker, "mismatch", {
      worldSize: 2,
      port: await freePort(),
      timeoutMs: 10000,
      extraEnv: { TORCH_DISTRIBUTED_DEBUG: "DETAIL" },
    });
    for (const o of outcomes) {
      const own = o.rank === 0 ? "[4]" : "[6]";
      const other = o.rank === 0 ? "[6]" : "[4]";
      assert.equal(o.code, 1, show(outcomes));
      const error = (o.result as { error: string }).error;
      assert.ok(
        error.startsWith(
          `allReduce: Detected mismatch between collectives on ranks. Rank ${o.rank} is running collective: CollectiveFingerPrint(OpType=ALLREDUCE, TensorShape=${own}`,
        ),
        error,
      );
      assert.ok(
        error.includes(
          `but Rank ${1 - o.rank} is running collective: CollectiveFingerPrint(OpType=ALLREDUCE, TensorShape=${other}`,
        ),
      );
    }
  });

  test("rendezvous variables are checked by name", () => {
    const env = { ...process.env };
    try {
      delete process.env.WORLD_SIZE;
      assert.throws(() => resolveInitOptions({ rank: 0 }), /WORLD_SIZE is not set/);
      Object.assign(process.env, { WORLD_SIZE: "2", RANK: "2" });
      assert.throws(
        () => resolveInitOptions(),
        (e: Error) => e instanceof DistributedConfigError && /RANK must be in \[0, 1\]/.test(e.message),
      );
      Object.assign(process.env, { RANK: "1", MASTER_PORT: "http" });
      assert.throws(() => resolveInitOptions(), /MASTER_PORT must be a non-negative integer, got 'http'/);
      Object.assign(process.env, { MASTER_PORT: "29400", MASTER_ADDR: "10.0.0.5" });
      delete process.env.LOCAL_RANK;
      assert.deepEqual(resolveInitOptions({ timeoutMs: 1000 }), {
        rank: 1,
        worldSize: 2,
        localRank: 1,
        masterAddr: "10.0.0.5",
        masterPort: 29400,
        timeoutMs: 1000,
      });
    } finally {
      for (const key of Object.keys(process.env)) if (!(key in env)) delete process.env[key];
      Object.assign(process.env, env);
    }
  });
});
