// Native memory stays flat over a long run: 300 training steps of a small convnet, each inside a
// scope. Live tensor handles and libtorch's bytes return to their starting values after every step,
// and the process's resident memory does not grow.
import { test } from "node:test";
import assert from "node:assert/strict";
import { F, liveTensors, manualSeed, memoryStats, randint, randn, scope } from "../src/torch";
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
