// The engine demo (`npm start` until the training methods land): trains a small convnet on
// Fashion-MNIST with supervised cross-entropy and prints its test accuracy.
import {
  F,
  Tensor,
  fromTypedArray,
  getNumThreads,
  keep,
  manualSeed,
  memoryStats,
  noGrad,
  randperm,
  scope,
} from "./torch";
import { AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential } from "./nn";
import { SGD, LinearWarmupCosine } from "./optim";
import { DEFAULT_FASHION_MNIST_DIR, loadMnistSplit } from "./data/mnist";

function toTensor(images: Uint8Array, count: number): Tensor {
  return scope(() => fromTypedArray(images, [count, 1, 28, 28]).float().div(255).sub(0.286).div(0.353));
}

function main(): void {
  const dir = process.env.LOCO_FASHION_MNIST ?? DEFAULT_FASHION_MNIST_DIR;
  const trainCount = Number(process.env.LOCO_DEMO_TRAIN ?? 12000);
  const epochs = Number(process.env.LOCO_DEMO_EPOCHS ?? 2);
  const batchSize = 128;
  manualSeed(0);
  const train = loadMnistSplit(dir, "train");
  const test = loadMnistSplit(dir, "test");
  const n = Math.min(trainCount, train.count);
  const xTrain = keep(toTensor(train.images.subarray(0, n * 784), n));
  const yTrain = keep(fromTypedArray(train.labels.subarray(0, n)).long());
  const xTest = keep(toTensor(test.images, test.count));
  const yTest = keep(fromTypedArray(test.labels).long());
  console.log(
    `loco engine demo: Fashion-MNIST (${dir}), ${n} training images, ${epochs} epochs, ${getNumThreads()} threads`,
  );

  const model = new Sequential(
    new Conv2d(1, 16, 3, { padding: 1, bias: false }),
    new BatchNorm2d(16),
    new ReLU(),
    new MaxPool2d(2),
    new Conv2d(16, 32, 3, { padding: 1, bias: false }),
    new BatchNorm2d(32),
    new ReLU(),
    new MaxPool2d(2),
    new Conv2d(32, 64, 3, { padding: 1, bias: false }),
    new BatchNorm2d(64),
    new ReLU(),
    new AdaptiveAvgPool2d(1),
    new Flatten(),
    new Linear(64, 10),
  );
  const stepsPerEpoch = Math.floor(n / batchSize);
  const totalSteps = stepsPerEpoch * epochs;
  const optimizer = new SGD(model.parameters(), { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: true });
  const schedule = new LinearWarmupCosine({ baseLr: 0.1, warmupSteps: Math.floor(stepsPerEpoch / 4), totalSteps });
  const started = Date.now();
  let step = 0;
  for (let epoch = 0; epoch < epochs; epoch++) {
    model.train();
    const order = keep(randperm(n));
    let lossSum = 0;
    for (let b = 0; b < stepsPerEpoch; b++) {
      const loss = scope(() => {
        for (const g of optimizer.paramGroups) g.lr = schedule.lrAt(step);
        const idx = order.narrow(0, b * batchSize, batchSize);
        const logits = model.forward(xTrain.indexSelect(0, idx));
        const l = F.crossEntropy(logits, yTrain.indexSelect(0, idx));
        optimizer.zeroGrad();
        l.backward();
        optimizer.step();
        return l.item();
      });
      lossSum += loss;
      step++;
      if (step % 25 === 0 || step === totalSteps) {
        const seconds = (Date.now() - started) / 1000;
        const rate = (step * batchSize) / seconds;
        const eta = ((totalSteps - step) * batchSize) / rate;
        process.stdout.write(
          `epoch ${epoch + 1}/${epochs}  step ${step}/${totalSteps}  loss ${(lossSum / (b + 1)).toFixed(4)}  ` +
            `${rate.toFixed(0)} img/s  ETA ${eta.toFixed(0)}s\n`,
        );
      }
    }
    order.dispose();
  }
  model.eval();
  let correct = 0;
  noGrad(() => {
    for (let start = 0; start < test.count; start += 1000) {
      const count = Math.min(1000, test.count - start);
      correct += scope(() => {
        const pred = model.forward(xTest.narrow(0, start, count)).argmax(1);
        return pred
          .eq(yTest.narrow(0, start, count))
          .sum()
          .item();
      });
    }
  });
  const seconds = (Date.now() - started) / 1000;
  console.log(
    `test accuracy ${(correct / test.count).toFixed(4)} (${correct}/${test.count}) after ${seconds.toFixed(1)} s`,
  );
  console.log(`peak bytes held by libtorch: ${(memoryStats().peakBytes / 2 ** 20).toFixed(1)} MiB`);
  for (const t of [xTrain, yTrain, xTest, yTest]) t.dispose();
  model.dispose();
  optimizer.dispose();
}

main();
