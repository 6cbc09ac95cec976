// loco's public surface: the engine (torch), layers (nn), optimizers (optim), models, learning.
export * as torch from "./torch";
export * as nn from "./nn";
export * as optim from "./optim";
export * as models from "./models";
export * as learning from "./learning";
export * as evaluation from "./eval";
export * as data from "./data";
export * as parallel from "./parallel";
