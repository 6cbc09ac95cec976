// Native memory stays flat over a long run: 300 training steps of a small convnet, each inside a
// scope. Live tensor handles and libtorch's bytes return to their starting values after every step,
// and the process's resident memory does not grow. Generators dropped by the program are freed.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as v8 from "node:v8";
import * as vm from "node:vm";
import {
  F,
  Generator,
  liveGenerators,
  liveTensors,
  manualSeed,
  memoryStats,
  randint,
  randn,
  scope,
} from "../src/torch";
import { AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential } from "../src/nn";
import { SGD } from "../src/optim";

test("300 training steps in scopes: live tensors and bytes return to start, RSS stays flat", () => {
  manualSeed(0);
  const model = new Sequential(
    new Conv2d(1, 8, 3, { padding: 1 }),
    new BatchNorm2d(8),
    new ReLU(),
    new MaxPool2d(2),
    new Conv2d(8, 16, 3, { padding: 1 }),
    new BatchNorm2d(16),
    new ReLU(),
    new AdaptiveAvgPool2d(1),
    new Flatten(),
    new Linear(16, 10),
  );
  const optimizer = new SGD(model.parameters(), { lr: 0.05, momentum: 0.9, weightDecay: 1e-4 });
  const step = (): number =>
    scope(() => {
      const x = randn([32, 1, 28, 28]);
      const y = randint(0, 10, [32]);
      optimizer.zeroGrad();
      const loss = F.crossEntropy(model.forward(x), y);
      loss.backward();
      optimizer.step();
      return loss.item();
    });

  // The first step creates the optimizer's momentum buffers: measure from after it.
  step();
  const startLive = liveTensors();
  const startBytes = memoryStats().currentBytes;
  const rss: number[] = [];
  let firstLoss = NaN;
  let lastLoss = NaN;
  for (let i = 0; i < 300; i++) {
    const loss = step();
    if (i === 0) firstLoss = loss;
    lastLoss = loss;
    assert.equal(liveTensors(), startLive, `live tensors changed at step ${i}`);
    assert.equal(memoryStats().currentBytes, startBytes, `bytes held by libtorch changed at step ${i}`);
    if (i % 50 === 49) rss.push(process.memoryUsage().rss);
  }
  assert.ok(Number.isFinite(lastLoss) && Number.isFinite(firstLoss), "losses are finite");
  // Resident memory after warm-up: later samples may not exceed the first by more than 5% + 8 MiB
  // (allocator arenas and V8 settle in the first steps).
  const growth = Math.max(...rss.slice(1)) - rss[0];
  const allowed = rss[0] * 0.05 + 8 * 1024 * 1024;
  assert.ok(
    growth <= allowed,
    `RSS grew by ${(growth / 2 ** 20).toFixed(1)} MiB: ${rss.map((r) => (r / 2 ** 20).toFixed(1)).join(", ")} MiB`,
  );
  console.log(`rss MiB every 50 steps: ${rss.map((r) => (r / 2 ** 20).toFixed(1)).join(", ")}`);
  model.dispose();
  optimizer.dispose();
});

/**
 * Runs the garbage collector (exposed at run time: the test runner starts node without
 * --expose-gc), then lets the event loop turn: Node queues the addon's finalizers and runs them
 * after the collection (native/addon.cpp says why they are not run inside it).
 */
async function collectGarbage(): Promise<void> {
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc") as () => void;
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

test("dropped generators are freed by the garbage collector, disposed ones at once", async () => {
  const start = liveGenerators();
  // Dropped without dispose(): the finalizer frees each one (the addon reports their size to V8).
  // Four rounds of 25k; resident memory is compared from the end of the first round on, so that
  // malloc's and V8's warm-up is not counted. Kept alive, 25k generators would hold ~125 MB.
  const alive: number[] = [];
  const rss: number[] = [];
  for (let round = 0; round < 4; round++) {
    for (let i = 0; i < 25_000; i++) {
      const g = new Generator(i);
      if (i % 5_000 === 0) scope(() => randn([2], { generator: g }));
    }
    await collectGarbage();
    alive.push(liveGenerators() - start);
    rss.push(process.memoryUsage().rss);
  }
  const afterDrop = liveGenerators() - start;
  // Disposed: released at once, nothing left for the collector.
  for (let i = 0; i < 50_000; i++) new Generator(i).dispose();
  assert.equal(liveGenerators() - start, afterDrop, "disposed generators are released at once");
  assert.ok(Math.max(...alive) <= 100, `generators still alive after GC, per round: ${alive.join(", ")}`);
  const growth = Math.max(...rss.slice(1)) - rss[0];
  const mib = rss.map((r) => (r / 2 ** 20).toFixed(1)).join(", ");
  assert.ok(growth < 32 * 2 ** 20, `RSS grew by ${(growth / 2 ** 20).toFixed(1)} MiB over rounds 2-4: ${mib} MiB`);
  console.log(`generators alive after GC per round: ${alive.join(", ")}; RSS MiB after each round: ${mib}`);
});
