// One rank of the data-parallel tests (test/parallel.test.ts starts two with torchrun's variables).
// The deterministic inputs and the model are built by the exported functions, which the test also
// uses for its single-process reference. argv[2] names the scenario; prints `RESULT <json>`.
import { BatchNorm1d, BatchNorm2d, Linear, ReLU, Sequential, type Module } from "../../src/nn";
import { SGD } from "../../src/optim";
import { Generator, type Tensor, cat, manualSeed, noGrad, randn, scope } from "../../src/torch";
import { type ProcessGroup, initProcessGroup } from "../../src/torch/distributed";
import { GradientAllReduce, broadcastState, convertSyncBatchNorm, globalNtXent } from "../../src/parallel";

export const PER_RANK = 2;
export const STEPS = 3;
export const TEMPERATURE = 0.5;

export const seeded = (shape: number[], seed: number): Tensor => randn(shape, { generator: new Generator(seed) });

/** The SyncBN scenario's layer: 3 channels with non-trivial weight and bias. */
export function syncBnLayer(): BatchNorm2d {
  const bn = new BatchNorm2d(3);
  noGrad(() => {
    bn.weight!.copy_(seeded([3], 3).add(1));
    bn.bias!.copy_(seeded([3], 4));
  });
  return bn;
}

/** A small projection network with a BatchNorm, initialised from `seed`. */
export function makeModel(seed: number): Sequential {
  manualSeed(seed);
  return new Sequential(new Linear(6, 16), new BatchNorm1d(16), new ReLU(), new Linear(16, 8));
}

/** Both views of step `step`'s global batch of PER_RANK × worldSize images: [2, images, 6]. */
export function stepViews(step: number, worldSize: number): [Tensor, Tensor] {
  const images = PER_RANK * worldSize;
  return [seeded([images, 6], 10 + step), seeded([images, 6], 20 + step)];
}

export const stateOf = (module: Module): Record<string, number[]> =>
  Object.fromEntries([...module.stateDict()].map(([k, v]) => [k, v.toArray()]));

const print = (result: unknown): void => void process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);

function syncBn(pg: ProcessGroup): Record<string, unknown> {
  const bn = syncBnLayer();
  convertSyncBatchNorm(bn, pg);
  const x = seeded([4, 3, 5, 5], 1)
    .narrow(0, 2 * pg.rank, 2)
    .clone()
    .requiresGrad_(true);
  const weights = seeded([4, 3, 5, 5], 2).narrow(0, 2 * pg.rank, 2);
  const y = bn.forward(x);
  y.mul(weights).sum().backward();
  // A second batch moves the running statistics again.
  noGrad(() => bn.forward(seeded([4, 3, 5, 5], 5).narrow(0, 2 * pg.rank, 2)));
  return {
    y: y.detach().toArray(),
    xGrad: x.grad!.toArray(),
    weightGrad: bn.weight!.grad!.toArray(),
    biasGrad: bn.bias!.grad!.toArray(),
    state: stateOf(bn),
  };
}

async function dataParallel(pg: ProcessGroup): Promise<Record<string, unknown>> {
  // Different initialisations per rank: the broadcast from rank 0 must make them equal.
  const model = makeModel(100 + pg.rank);
  convertSyncBatchNorm(model, pg);
  await broadcastState(pg, model, 0);
  const params = model.parameters();
  const opt = new SGD(params, { lr: 0.1, momentum: 0.9 });
  // Small buckets: the 4 parameters travel in several messages.
  const gradients = new GradientAllReduce(pg, params, { bucketBytes: 300 });
  const losses: number[] = [];
  for (let step = 0; step < STEPS; step++) {
    const loss = scope(() => {
      const [v1, v2] = stepViews(step, pg.worldSize);
      const local = (v: Tensor): Tensor => v.narrow(0, PER_RANK * pg.rank, PER_RANK);
      opt.zeroGrad();
      const l = globalNtXent(model.forward(cat([local(v1), local(v2)])), TEMPERATURE, pg);
      l.backward();
      return l.detach();
    });
    await gradients.averageGradients();
    opt.step();
    losses.push((await pg.allReduce(loss, { op: "avg" })).item());
    loss.dispose();
  }
  return { losses, buckets: gradients.buckets.length, state: stateOf(model) };
}

async function main(): Promise<void> {
  const pg = await initProcessGroup();
  const scenario = process.argv[2];
  if (scenario === "syncbn") print(syncBn(pg));
  else if (scenario === "dataParallel") print(await dataParallel(pg));
  else throw new Error(`unknown scenario ${scenario}`);
  await pg.destroy();
}

// Only as a rank: `node --test dist/test/` may load every file under test/.
if (require.main === module && process.argv[2] !== undefined && process.env.WORLD_SIZE !== undefined) void main();
