// One rank of a distributed test (test/distributed.test.ts starts two of these with RANK,
// WORLD_SIZE, MASTER_ADDR and MASTER_PORT set). argv[2] names the scenario; the rank prints one line
// `RESULT <json>` with what it computed or the error it got.
import { setTimeout as sleep } from "node:timers/promises";
import { type Tensor, arange, tensor, zeros } from "../../src/torch";
import { type ProcessGroup, initProcessGroup } from "../../src/torch/distributed";

/** Rank r's input: a [2, 3] float32 tensor that differs per rank. */
export function rankInput(rank: number): Tensor {
  return arange(0, 6, 1, { dtype: "float32" })
    .reshape([2, 3])
    .mul(rank + 1)
    .add(0.5 - rank);
}

/** Rank r's loss weights for the differentiable collectives ([worldSize * 2, 3]). */
export function rankWeights(rank: number, worldSize: number): Tensor {
  return arange(0, worldSize * 6, 1, { dtype: "float32" })
    .reshape([worldSize * 2, 3])
    .sub(rank * 3)
    .mul(0.25);
}

function print(result: unknown): void {
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

async function operations(pg: ProcessGroup): Promise<Record<string, number[] | number[][]>> {
  const r = pg.rank;
  const out: Record<string, number[] | number[][]> = {};
  for (const op of ["sum", "avg", "max", "min", "product"] as const) {
    out[op] = (await pg.allReduce(rankInput(r), { op })).toArray();
  }
  out.sumInt64 = (await pg.allReduce(tensor([r + 1, 10 * r], { dtype: "int64" }))).toArray();
  out.allGather = (await pg.allGather(rankInput(r))).map((t) => t.toArray());
  out.broadcast = (await pg.broadcast(rankInput(r), 1)).toArray();
  // Blocking send/recv: rank 0 → rank 1.
  if (r === 0) await pg.send(rankInput(0).add(100), 1);
  else out.recv = (await pg.recv(zeros([2, 3]), 0)).toArray();
  // Asynchronous: rank 1 posts its recv, both meet at a barrier, then rank 0 sends; the work handle
  // is waited on only afterwards.
  if (r === 1) {
    const pending = pg.recv(zeros([2, 3]), 0, { tag: 7 });
    await pg.barrier();
    out.recvAsync = (await pending.wait()).toArray();
  } else {
    await pg.barrier();
    const sending = pg.send(rankInput(0).mul(-1), 1, { tag: 7 });
    await sending.wait();
  }
  // Differentiable collectives.
  const x = rankInput(r).requiresGrad_(true);
  const gathered = pg.allGatherWithGrad(x);
  gathered.mul(rankWeights(r, pg.worldSize)).sum().backward();
  out.gatherWithGrad = gathered.detach().toArray();
  out.gatherGrad = x.grad!.toArray();
  const y = rankInput(r).requiresGrad_(true);
  const summed = pg.allReduceWithGrad(y);
  summed
    .mul(summed)
    .mul(rankWeights(r, pg.worldSize).narrow(0, 0, 2))
    .sum()
    .backward();
  out.reduceWithGrad = summed.detach().toArray();
  out.reduceGrad = y.grad!.toArray();
  return out;
}

async function main(): Promise<void> {
  const scenario = process.argv[2];
  const started = Date.now();
  let pg: ProcessGroup | undefined;
  try {
    pg = await initProcessGroup();
    if (scenario === "operations") {
      print(await operations(pg));
    } else if (scenario === "killed") {
      await pg.allReduce(rankInput(pg.rank));
      const big = zeros([1 << 22]);
      const victim = pg.rank === Number(process.env.KILL_RANK ?? 1);
      // The victim lets the other finish the first all-reduce (its last messages may still be in
      // flight) and enter the second before dying.
      if (victim) await sleep(500);
      const started = Date.now();
      const work = pg.allReduce(big);
      // One rank (KILL_RANK, default 1) dies with its operation in flight; the other must fail, not hang.
      if (victim) process.kill(process.pid, "SIGKILL");
      await work;
      print({ error: null, elapsedMs: Date.now() - started });
    } else if (scenario === "recvKilled") {
      await pg.barrier();
      // Rank 1 dies once rank 0 is surely past the barrier and waiting in its recv.
      if (pg.rank === 1) {
        await sleep(500);
        process.kill(process.pid, "SIGKILL");
      }
      const started = Date.now();
      let recvError = "";
      try {
        await pg.recv(zeros([4]), 1);
      } catch (error) {
        recvError = (error as Error).message;
      }
      const elapsedMs = Date.now() - started;
      // The group refuses further operations, repeating the first failure.
      let laterError = "";
      try {
        await pg.barrier();
      } catch (error) {
        laterError = (error as Error).message;
      }
      await pg.destroy();
      print({ error: recvError, elapsedMs, laterError, failure: pg.failure });
      process.exit(1);
    } else if (scenario === "mismatch") {
      // Different shapes on the two ranks: only caught with TORCH_DISTRIBUTED_DEBUG=DETAIL.
      await pg.allReduce(zeros([pg.rank === 0 ? 4 : 6]));
      print({ error: null });
    } else if (scenario === "stalled") {
      await pg.barrier();
      if (pg.rank === 1) {
        // Never reaches the all-reduce: waits past rank 0's timeout, then leaves.
        await new Promise((resolve) => setTimeout(resolve, pg!.timeoutMs + 2000));
        process.exit(0);
      }
      const started = Date.now();
      await pg.allReduce(rankInput(pg.rank));
      print({ error: null, elapsedMs: Date.now() - started });
    } else {
      throw new Error(`unknown scenario ${scenario}`);
    }
    await pg.destroy();
  } catch (error) {
    print({ error: (error as Error).message, elapsedMs: Date.now() - started });
    process.exit(1);
  }
}

// Only as a rank: `node --test dist/test/` may load every file under test/.
if (require.main === module && process.argv[2] !== undefined && process.env.WORLD_SIZE !== undefined) void main();
