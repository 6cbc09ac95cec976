// The data layer: datasets (IDX, CIFAR binary, STL-10 binary, image folders), batched seeded
// augmentations, and a loader that prepares the next batch while the current one trains.
export * from "./dataset";
export { readIdx, writeIdx, type IdxArray } from "./idx";
export * from "./mnist";
export * from "./cifar";
export * from "./stl10";
export * from "./folder";
export * from "./stream";
export * from "./synthetic";
export * from "./augment";
export * from "./loader";
export * from "./datasets";
export { Rng, roundHalfEven } from "./rng";
export { augmentChunkImages, augmentInChunks, augmentRng, prepareBatch, type PreparedBatch } from "./prepare";
export * from "./registry";
