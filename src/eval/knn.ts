// Weighted k-nearest-neighbour classifier on frozen features (docs/methods.md's kNN monitor, as in
// Wu et al. 2018 "InstDisc" and the SimCLR-style monitors): cosine similarity between
// L2-normalised features; the k most similar train features vote for their class with weight
// exp(similarity / temperature); the class with the largest total wins.
import { noGrad } from "../torch/autograd";
import { zeros } from "../torch/creation";
import * as F from "../torch/functional";
import { scope } from "../torch/scope";
import type { FeatureSet } from "./features";
import { checkFeatureSet, inferNumClasses } from "./linear";

export interface KnnOptions {
  /** Neighbours that vote (default 200; capped at the number of train features). */
  k?: number;
  /** Temperature of the vote weights exp(sim / temperature) (default 0.1). */
  temperature?: number;
  /** Number of classes (default: largest label in train or test + 1). */
  numClasses?: number;
  /**
   * Test rows per chunk (default: as many as keep the [chunk, Ntrain] similarity matrix near
   * 2^24 elements, at most 1024). Memory is O(chunk · Ntrain), whatever the test size.
   */
  chunkSize?: number;
  /** Also return every test row's class scores (the summed weights), [M, numClasses] row-major. */
  returnScores?: boolean;
}

export interface KnnResult {
  /** Top-1 accuracy on the test features, in [0, 1]. */
  top1: number;
  /** Top-5 accuracy (classes ranked by vote), only when numClasses > 5. */
  top5?: number;
  /** The number of neighbours used (k capped at the train size). */
  k: number;
  temperature: number;
  numClasses: number;
  /** Predicted class of each test row (ties: the smallest class index). */
  predictions: Int32Array;
  /** With returnScores: sum over the k neighbours of class c of exp(sim / temperature), [M · C]. */
  scores?: Float64Array;
  ms: number;
}

const FN = "knnClassify";

/**
 * Classifies each test feature by a weighted vote of its k nearest train features (cosine
 * similarity) and reports the accuracy. Inputs are read, never modified or disposed. The votes are
 * summed in float64, so small temperatures do not overflow.
 */
export function knnClassify(train: FeatureSet, test: FeatureSet, options: KnnOptions = {}): KnnResult {
  const t0 = performance.now();
  const [n, d] = checkFeatureSet(train, "train", FN);
  const [m, dTest] = checkFeatureSet(test, "test", FN);
  if (d !== dTest) throw new RangeError(`${FN}: train features have ${d} dimensions but test features ${dTest}`);
  const kRequested = options.k ?? 200;
  if (!Number.isInteger(kRequested) || kRequested < 1)
    throw new RangeError(`${FN}: k must be a positive integer, got ${kRequested}`);
  const k = Math.min(kRequested, n);
  const temperature = options.temperature ?? 0.1;
  if (!(temperature > 0) || !Number.isFinite(temperature)) {
    throw new RangeError(`${FN}: temperature must be a finite number > 0, got ${temperature}`);
  }
  const inferred = inferNumClasses(FN, train.labels, test.labels);
  const numClasses = options.numClasses ?? inferred;
  if (!Number.isInteger(numClasses) || numClasses < inferred) {
    throw new RangeError(`${FN}: numClasses ${numClasses} is below the largest label + 1 (${inferred})`);
  }
  const chunkSize = options.chunkSize ?? Math.max(1, Math.min(1024, Math.floor(2 ** 24 / n)));
  if (!Number.isInteger(chunkSize) || chunkSize < 1)
    throw new RangeError(`${FN}: chunkSize must be a positive integer, got ${chunkSize}`);
  const topK = numClasses > 5;

  const predictions = new Int32Array(m);
  const scores = options.returnScores ? new Float64Array(m * numClasses) : undefined;
  let correct1 = 0;
  let correct5 = 0;
  noGrad(() =>
    scope(() => {
      const bank = F.normalize(train.features.float(), { dim: 1 }).t().contiguous(); // [D, N]
      const bankLabels = train.labels.long();
      for (let start = 0; start < m; start += chunkSize) {
        scope(() => {
          const len = Math.min(chunkSize, m - start);
          const query = F.normalize(test.features.narrow(0, start, len).float(), { dim: 1 });
          const { values, indices } = query.mm(bank).topk(k, 1); // [len, k]
          const neighbourLabels = bankLabels.indexSelect(0, indices.flatten()).view(len, k);
          const weights = values.double().div(temperature).exp();
          const votes = zeros([len, numClasses], { dtype: "float64" }).scatterAdd(1, neighbourLabels, weights);
          const y = test.labels.narrow(0, start, len).long();
          const pred = votes.argmax(1);
          correct1 += pred.eq(y).sum().item();
          predictions.set(Int32Array.from(pred.toArray()), start);
          if (topK) correct5 += votes.topk(5, 1).indices.eq(y.unsqueeze(1)).sum().item();
          if (scores) scores.set(votes.data() as Float64Array, start * numClasses);
        });
      }
    }),
  );
  const result: KnnResult = { top1: correct1 / m, k, temperature, numClasses, predictions, ms: performance.now() - t0 };
  if (topK) result.top5 = correct5 / m;
  if (scores) result.scores = scores;
  return result;
}
