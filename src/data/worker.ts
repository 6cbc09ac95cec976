// The loader's worker thread: opens the dataset's pixels from their SourceSpec (shared memory or
// the same files), and prepares the batches it is sent, one at a time, with its own libtorch
// (one intra-op thread unless the loader asked for more). Results go back as transferred buffers.
import { parentPort, workerData } from "node:worker_threads";
import { Augmentation, type AugmentConfig } from "./augment";
import { type SourceSpec, openSource } from "./dataset";
import type { BadImage } from "./folder";
import { prepareBatch, recycleBuffers } from "./prepare";
import { prepareStreamingBatch, streamedFiles } from "./stream";

export interface WorkerInit {
  source: SourceSpec;
  configs: AugmentConfig[];
  seed: number;
}

export type WorkerRequest =
  | { type: "job"; id: number; indices: Int32Array; epoch: number; batch: number; skip: number }
  /** A batch's view buffers, given back once the loader has copied them (reused for later batches). */
  | { type: "recycle"; buffers: ArrayBuffer[] }
  | { type: "close" };

export type WorkerReply =
  | {
      id: number;
      views: Float32Array[];
      shapes: [number, number, number, number][];
      prepareMs: number;
      /** Streamed folders: the dataset index behind each position, and files found bad. */
      indices?: Int32Array;
      bad?: BadImage[];
    }
  | { id: number; error: string; badImage?: BadImage };

if (parentPort === null) throw new Error("loco/data/worker: this module runs only as a worker thread");
const port = parentPort;
const init = workerData as WorkerInit;
const source = openSource(init.source);
const augmentations = init.configs.map((c) => new Augmentation(c));
const streamed = streamedFiles(init.source);
const knownBad = new Set<string>();

// Streamed folders decode asynchronously: jobs are taken one at a time, in arrival order, so that a
// worker is one busy core and its jobs finish in the order the loader asked for them.
// On close, jobs not yet started are dropped and a streamed batch stops between images, so that the
// worker exits before the loader's grace period ends (terminating it mid-call would abort).
let queue: Promise<void> = Promise.resolve();
let closing = false;

async function prepare(msg: Extract<WorkerRequest, { type: "job" }>): Promise<void> {
  if (closing) return;
  let reply: WorkerReply;
  try {
    const prepared =
      streamed === null
        ? prepareBatch(source, augmentations, msg.indices, init.seed, msg.epoch, msg.batch, msg.skip)
        : await prepareStreamingBatch(streamed, augmentations, msg.indices, init.seed, msg.epoch, msg.batch, knownBad, {
            cancelled: () => closing,
          });
    reply = { id: msg.id, ...prepared };
    port.postMessage(
      reply,
      prepared.views.map((v) => v.buffer as ArrayBuffer),
    );
  } catch (error) {
    const e = error as Error & Partial<BadImage>;
    reply = {
      id: msg.id,
      error: e.name === "BadImageError" ? e.message : (e.stack ?? String(error)),
      ...(e.name === "BadImageError" ? { badImage: { file: e.file!, reason: e.reason! } } : {}),
    };
    port.postMessage(reply);
  }
}

port.on("message", (msg: WorkerRequest) => {
  if (msg.type === "close") {
    closing = true;
    void queue.then(() => {
      source.close();
      port.close();
    });
    return;
  }
  if (msg.type === "recycle") {
    recycleBuffers(msg.buffers);
    return;
  }
  queue = queue.then(() => prepare(msg));
});
