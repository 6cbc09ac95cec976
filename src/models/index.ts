// Encoders for local contrastive learning.
export {
  ResNet,
  ResNetStage,
  BasicBlock,
  Bottleneck,
  makeResLayer,
  resnet18,
  resnet34,
  resnet50,
  resnet101,
  resnet152,
  type BlockOptions,
  type BlockType,
  type ResNetDepth,
  type ResNetStem,
  type ResNetOptions,
} from "./resnet";
