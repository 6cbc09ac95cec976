// Scaling out: the launcher and the data-parallel building blocks (docs/distributed.md).
export * from "./launcher";
export * from "./gradients";
export * from "./sync-batchnorm";
export * from "./ntxent";
