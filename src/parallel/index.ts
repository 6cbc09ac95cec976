// Scaling out: the launcher and data-parallel building blocks (docs/distributed.md).
export * from "./launcher";
