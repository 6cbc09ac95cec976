// The loader's worker thread: opens the dataset's pixels from their SourceSpec (shared memory or
// the same files), and prepares the batches it is sent, one at a time, with its own libtorch
// (one intra-op thread unless the loader asked for more). Results go back as transferred buffers.
import { parentPort, workerData } from "node:worker_threads";
import { Augmentation, type AugmentConfig } from "./augment";
import { type SourceSpec, openSource } from "./dataset";
import { prepareBatch } from "./prepare";

export interface WorkerInit {
  source: SourceSpec;
  configs: AugmentConfig[];
  seed: number;
}

export type WorkerRequest =
  { type: "job"; id: number; indices: Int32Array; epoch: number; batch: number; skip: number } | { type: "close" };

export type WorkerReply =
  | { id: number; views: Float32Array[]; shapes: [number, number, number, number][]; prepareMs: number }
  | { id: number; error: string };

if (parentPort === null) throw new Error("loco/data/worker: this module runs only as a worker thread");
const port = parentPort;
const init = workerData as WorkerInit;
const source = openSource(init.source);
const augmentations = init.configs.map((c) => new Augmentation(c));

port.on("message", (msg: WorkerRequest) => {
  if (msg.type === "close") {
    source.close();
    port.close();
    return;
  }
  let reply: WorkerReply;
  try {
    const prepared = prepareBatch(source, augmentations, msg.indices, init.seed, msg.epoch, msg.batch, msg.skip);
    reply = { id: msg.id, ...prepared };
    port.postMessage(
      reply,
      prepared.views.map((v) => v.buffer as ArrayBuffer),
    );
  } catch (error) {
    reply = { id: msg.id, error: (error as Error).stack ?? String(error) };
    port.postMessage(reply);
  }
});
