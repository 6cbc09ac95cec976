// Decoders D_k (docs/methods.md): c residual blocks of the encoder's own type at the width of h_k
// (stride 1) → global average pool → an m-layer MLP, (Linear → BN → ReLU) × (m−1) → Linear,
// hidden width = channels of the pooled input, output 128. c = 0, m = 2 is SimCLR's projection head.
import type { Tensor } from "../torch";
import { Module } from "../nn/module";
import { AdaptiveAvgPool2d, Flatten, Linear, ReLU } from "../nn/layers";
import { BatchNorm1d } from "../nn/batchnorm";
import { Sequential } from "../nn/container";
import { BasicBlock, type BlockType, Bottleneck } from "../models/resnet";
import type { Generator } from "../torch/random";

export interface DecoderOptions {
  /** Channels of the stage output h_k. */
  inChannels: number;
  /** Residual blocks before pooling (c). */
  convBlocks: number;
  /** Linear layers in the MLP head (m ≥ 1). */
  mlpLayers: number;
  /** The encoder's block type for the conv blocks (default BasicBlock). */
  block?: BlockType;
  /** Batch norm between the MLP's linear layers (default true). */
  headBN?: boolean;
  /** Embedding size (default 128). */
  outDim?: number;
  generator?: Generator;
}

export class Decoder extends Module {
  readonly blocks: Sequential;
  readonly pool: Sequential;
  readonly head: Sequential;
  readonly options: Required<Omit<DecoderOptions, "generator" | "block">> & { block: BlockType };

  constructor(options: DecoderOptions) {
    super();
    const { inChannels, convBlocks, mlpLayers } = options;
    const block = options.block ?? BasicBlock;
    const headBN = options.headBN ?? true;
    const outDim = options.outDim ?? 128;
    if (!Number.isInteger(inChannels) || inChannels < 1)
      throw new RangeError(`Decoder: inChannels must be a positive integer, got ${inChannels}`);
    if (!Number.isInteger(convBlocks) || convBlocks < 0)
      throw new RangeError(`Decoder: convBlocks (c) must be an integer >= 0, got ${convBlocks}`);
    if (!Number.isInteger(mlpLayers) || mlpLayers < 1)
      throw new RangeError(`Decoder: mlpLayers (m) must be an integer >= 1, got ${mlpLayers}`);
    if (!Number.isInteger(outDim) || outDim < 1)
      throw new RangeError(`Decoder: outDim must be a positive integer, got ${outDim}`);
    if (block === Bottleneck && inChannels % Bottleneck.expansion !== 0) {
      throw new RangeError(`Decoder: bottleneck blocks need inChannels divisible by 4, got ${inChannels}`);
    }
    this.options = { inChannels, convBlocks, mlpLayers, block, headBN, outDim };
    const generator = options.generator;
    // Blocks keep the stage's width: a bottleneck's planes are a quarter of its output channels.
    const planes = inChannels / block.expansion;
    const blocks: Module[] = [];
    for (let i = 0; i < convBlocks; i++) blocks.push(new block(inChannels, planes, { generator }));
    this.blocks = this.registerModule("blocks", new Sequential(...blocks));
    this.pool = this.registerModule("pool", new Sequential(new AdaptiveAvgPool2d(1), new Flatten()));
    const head: Module[] = [];
    for (let i = 0; i < mlpLayers - 1; i++) {
      head.push(new Linear(inChannels, inChannels, { bias: !headBN, generator }));
      if (headBN) head.push(new BatchNorm1d(inChannels));
      head.push(new ReLU(true));
    }
    head.push(new Linear(inChannels, outDim, { generator }));
    this.head = this.registerModule("head", new Sequential(...head));
  }

  override forward(h: Tensor): Tensor {
    return this.head.forward(this.pool.forward(this.blocks.forward(h)));
  }

  override extraRepr(): string {
    const o = this.options;
    return `c=${o.convBlocks}, m=${o.mlpLayers}, headBN=${o.headBN}, in=${o.inChannels}, out=${o.outDim}`;
  }
}
