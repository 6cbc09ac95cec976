// Data-parallel building blocks on 2 ranks (child processes, one thread each) against one process
// with the doubled batch: SyncBatchNorm (output, input/weight/bias gradients, running statistics)
// against BatchNorm on the concatenated batch; and 3 SGD steps of a small network with SyncBN,
// global-batch NT-Xent and bucketed gradient averaging against the same steps on the whole batch
// (losses, weights, running statistics), starting from different per-rank initialisations that
// the broadcast from rank 0 must reconcile.
import { describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as path from "node:path";
import { SGD } from "../src/optim";
import { cat, noGrad, scope } from "../src/torch";
import { ntXent } from "../src/learning/ntxent";
import { STEPS, TEMPERATURE, makeModel, seeded, stateOf, stepViews, syncBnLayer } from "./helpers/parallel-worker";
import { type RankOutcome, freePort, runRanks } from "./helpers/ranks";

const worker = path.join(__dirname, "helpers", "parallel-worker.js");

function assertClose(actual: number[], expected: number[], what: string, rtol = 2e-5, atol = 2e-6): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    assert.ok(err <= atol || err <= rtol * Math.abs(expected[i]), `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

const show = (outcomes: RankOutcome[]): string =>
  outcomes.map((o) => `rank ${o.rank} (code ${o.code}):\n${o.stdout}\n${o.stderr}`).join("\n");

async function twoRanks(scenario: string): Promise<Record<string, unknown>[]> {
  const outcomes = await runRanks(worker, scenario, { worldSize: 2, port: await freePort(), timeoutMs: 60000 });
  for (const o of outcomes) assert.equal(o.code, 0, show(outcomes));
  return outcomes.map((o) => o.result!);
}

describe("data parallel on 2 ranks equals one process with the doubled batch", () => {
  test("SyncBatchNorm: output, gradients and running statistics of BatchNorm on the whole batch", async () => {
    const ranks = await twoRanks("syncbn");
    const bn = syncBnLayer();
    const x = seeded([4, 3, 5, 5], 1).requiresGrad_(true);
    const y = bn.forward(x);
    y.mul(seeded([4, 3, 5, 5], 2))
      .sum()
      .backward();
    noGrad(() => bn.forward(seeded([4, 3, 5, 5], 5)));
    const half = 2 * 3 * 5 * 5;
    ranks.forEach((r, rank) => {
      assertClose(
        r.y as number[],
        y
          .detach()
          .toArray()
          .slice(rank * half, (rank + 1) * half),
        `rank ${rank} y`,
      );
      assertClose(r.xGrad as number[], x.grad!.toArray().slice(rank * half, (rank + 1) * half), `rank ${rank} x.grad`);
      for (const [key, value] of Object.entries(stateOf(bn))) {
        assertClose((r.state as Record<string, number[]>)[key], value, `rank ${rank} ${key}`);
      }
    });
    // Each rank's parameter gradient is its share; their sum is the whole batch's.
    const sum = (key: string): number[] =>
      (ranks[0][key] as number[]).map((v, i) => v + (ranks[1][key] as number[])[i]);
    assertClose(sum("weightGrad"), bn.weight!.grad!.toArray(), "weight.grad");
    assertClose(sum("biasGrad"), bn.bias!.grad!.toArray(), "bias.grad");
  });

  test("3 steps with SyncBN, global NT-Xent and bucketed gradient averaging", async () => {
    const ranks = await twoRanks("dataParallel");
    const model = makeModel(100);
    const opt = new SGD(model.parameters(), { lr: 0.1, momentum: 0.9 });
    const losses: number[] = [];
    for (let step = 0; step < STEPS; step++) {
      losses.push(
        scope(() => {
          const [v1, v2] = stepViews(step, 2);
          opt.zeroGrad();
          const loss = ntXent(model.forward(cat([v1, v2])), TEMPERATURE);
          loss.backward();
          opt.step();
          return loss.item();
        }),
      );
    }
    const expected = stateOf(model);
    ranks.forEach((r, rank) => {
      assert.ok((r.buckets as number) > 1, "the gradients travelled in several buckets");
      assertClose(r.losses as number[], losses, `rank ${rank} losses`);
      for (const [key, value] of Object.entries(expected)) {
        assertClose((r.state as Record<string, number[]>)[key], value, `rank ${rank} ${key}`);
      }
    });
  });
});
