// The ResNet family (He et al., "Deep Residual Learning for Image Recognition", 2016,
// https://arxiv.org/abs/1512.03385), following torchvision's resnet.py design (v0.14): BasicBlock
// and Bottleneck with an `expansion`, a layer builder adding the 1×1 downsample shortcut, stride on
// the 3×3 conv of Bottleneck ("ResNet v1.5"), and parameter names equal to torchvision's
// (`conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`,
// `fc.weight`), so torchvision state dicts load in both directions.
//
// For local learning (docs/methods.md) the network is also exposed as four stages:
// S_1 = stem + layer1 (conv2_x), S_2 = layer2, S_3 = layer3, S_4 = layer4, and as a sequence of
// blocks (stem, then every residual block) that stages can be cut from at any boundary. The stage
// modules are views: they hold the same child modules under the same names, so a stage's state
// dict is the matching subset of the model's.
import type { Tensor } from "../torch/tensor";
import type { DType, MemoryFormat } from "../torch/dtype";
import type { Generator } from "../torch/random";
import { Module } from "../nn/module";
import { AdaptiveAvgPool2d, Conv2d, Identity, Linear, MaxPool2d, ReLU } from "../nn/layers";
import { BatchNorm2d } from "../nn/batchnorm";
import { Sequential } from "../nn/container";
import * as init from "../nn/init";

/** Options every block and layer builder accepts. */
export interface BlockOptions {
  /** Stride of the block (on its 3×3 conv); default 1. */
  stride?: number;
  /** Shortcut projection applied to the block's input (null/absent: identity shortcut). */
  downsample?: Module | null;
  dtype?: DType;
  generator?: Generator;
}

/** What a ResNet block class provides: a constructor and its channel expansion factor. */
export interface BlockType {
  new (inplanes: number, planes: number, options?: BlockOptions): BasicBlock | Bottleneck;
  /** Output channels = planes · expansion. */
  readonly expansion: number;
}

function conv3x3(inp: number, out: number, stride: number, options: BlockOptions): Conv2d {
  return new Conv2d(inp, out, 3, {
    stride,
    padding: 1,
    bias: false,
    dtype: options.dtype,
    generator: options.generator,
  });
}

function conv1x1(inp: number, out: number, stride: number, options: BlockOptions): Conv2d {
  return new Conv2d(inp, out, 1, { stride, bias: false, dtype: options.dtype, generator: options.generator });
}

function bn(channels: number, options: BlockOptions): BatchNorm2d {
  return new BatchNorm2d(channels, { dtype: options.dtype });
}

/** `x` in `format` (itself when it already is, or when `format` is null). */
function inFormat(x: Tensor, format: MemoryFormat | null): Tensor {
  return format === null || x.ndim !== 4 || x.isContiguous(format) ? x : x.contiguous(format);
}

/** Two 3×3 convs with a residual connection (ResNet-18/34). Output channels: planes. */
export class BasicBlock extends Module {
  static readonly expansion = 1;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly relu: ReLU;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly downsample: Module | null;
  readonly stride: number;
  /** Layout the block converts its input to first (null: none); ResNet.useChannelsLast sets it. */
  inputFormat: MemoryFormat | null = null;

  constructor(inplanes: number, planes: number, options: BlockOptions = {}) {
    super();
    this.stride = options.stride ?? 1;
    this.conv1 = this.registerModule("conv1", conv3x3(inplanes, planes, this.stride, options));
    this.bn1 = this.registerModule("bn1", bn(planes, options));
    this.relu = this.registerModule("relu", new ReLU(true));
    this.conv2 = this.registerModule("conv2", conv3x3(planes, planes, 1, options));
    this.bn2 = this.registerModule("bn2", bn(planes, options));
    this.downsample = this.registerModule("downsample", options.downsample ?? null);
  }

  /** The BN whose weight zeroInitResidual sets to 0 (the last BN of the residual branch). */
  get lastBN(): BatchNorm2d {
    return this.bn2;
  }

  override forward(x: Tensor): Tensor {
    x = inFormat(x, this.inputFormat);
    const branch = this.conv2.forward(this.bn1.forwardReLU(this.conv1.forward(x)));
    const identity = this.downsample ? this.downsample.forward(x) : x;
    // relu(bn2(branch) + identity), one node in training mode (BatchNormBase.forwardReLU)
    return this.bn2.forwardReLU(branch, identity);
  }
}

/**
 * 1×1 reduce, 3×3 (carrying the stride, v1.5), 1×1 expand, with a residual connection
 * (ResNet-50/101/152). Output channels: planes · 4.
 */
export class Bottleneck extends Module {
  static readonly expansion = 4;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly conv3: Conv2d;
  readonly bn3: BatchNorm2d;
  readonly relu: ReLU;
  readonly downsample: Module | null;
  readonly stride: number;
  /** Layout the block converts its input to first (null: none); ResNet.useChannelsLast sets it. */
  inputFormat: MemoryFormat | null = null;

  constructor(inplanes: number, planes: number, options: BlockOptions = {}) {
    super();
    this.stride = options.stride ?? 1;
    const width = planes; // torchvision: planes · (base_width / 64) · groups, with groups 1 and base_width 64
    this.conv1 = this.registerModule("conv1", conv1x1(inplanes, width, 1, options));
    this.bn1 = this.registerModule("bn1", bn(width, options));
    this.conv2 = this.registerModule("conv2", conv3x3(width, width, this.stride, options));
    this.bn2 = this.registerModule("bn2", bn(width, options));
    this.conv3 = this.registerModule("conv3", conv1x1(width, planes * Bottleneck.expansion, 1, options));
    this.bn3 = this.registerModule("bn3", bn(planes * Bottleneck.expansion, options));
    this.relu = this.registerModule("relu", new ReLU(true));
    this.downsample = this.registerModule("downsample", options.downsample ?? null);
  }

  get lastBN(): BatchNorm2d {
    return this.bn3;
  }

  override forward(x: Tensor): Tensor {
    x = inFormat(x, this.inputFormat);
    let out = this.bn1.forwardReLU(this.conv1.forward(x));
    out = this.bn2.forwardReLU(this.conv2.forward(out));
    const branch = this.conv3.forward(out);
    const identity = this.downsample ? this.downsample.forward(x) : x;
    // relu(bn3(branch) + identity), one node in training mode (BatchNormBase.forwardReLU)
    return this.bn3.forwardReLU(branch, identity);
  }
}

/**
 * A residual layer (torchvision's _make_layer): `blocks` blocks named "0", "1", …; the first has
 * the stride and, when the stride or channel count changes, a shortcut Sequential(conv1x1, BN)
 * named `downsample` (keys `downsample.0.weight`, `downsample.1.running_mean`, …).
 */
export function makeResLayer(
  block: BlockType,
  inplanes: number,
  planes: number,
  blocks: number,
  options: { stride?: number; dtype?: DType; generator?: Generator } = {},
): Sequential {
  const stride = options.stride ?? 1;
  const out = planes * block.expansion;
  const downsample =
    stride !== 1 || inplanes !== out ? new Sequential(conv1x1(inplanes, out, stride, options), bn(out, options)) : null;
  const layer = new Sequential(new block(inplanes, planes, { ...options, stride, downsample }));
  for (let i = 1; i < blocks; i++)
    layer.append(new block(out, planes, { dtype: options.dtype, generator: options.generator }));
  return layer;
}

export type ResNetDepth = 18 | 34 | 50 | 101 | 152;
export type ResNetStem = "imagenet" | "cifar";

const ARCH: Record<ResNetDepth, { block: BlockType; layers: [number, number, number, number] }> = {
  18: { block: BasicBlock, layers: [2, 2, 2, 2] },
  34: { block: BasicBlock, layers: [3, 4, 6, 3] },
  50: { block: Bottleneck, layers: [3, 4, 6, 3] },
  101: { block: Bottleneck, layers: [3, 4, 23, 3] },
  152: { block: Bottleneck, layers: [3, 8, 36, 3] },
};

export interface ResNetOptions {
  /** 18, 34 (BasicBlock) or 50, 101, 152 (Bottleneck). Default 18. */
  depth?: ResNetDepth;
  /** Base width: stage widths are width, 2·width, 4·width, 8·width (× expansion). Default 64. */
  width?: number;
  /**
   * "imagenet" (default): 7×7 stride-2 conv, BN, ReLU, 3×3 stride-2 max pool.
   * "cifar": 3×3 stride-1 conv, BN, ReLU, no max pool (for 32×32 images). Names stay conv1/bn1.
   */
  stem?: ResNetStem;
  /** Input image channels (default 3). */
  inChannels?: number;
  /** Outputs of the final linear layer `fc` (default 1000); 0 or null: no fc, forward returns features. */
  numClasses?: number | null;
  /** Zero-init the last BN of each residual branch, so each block starts as identity (default false). */
  zeroInitResidual?: boolean;
  /** Store conv weights channels-last and convert inputs to channels-last (default false). */
  channelsLast?: boolean;
  /** Parameter dtype (default float32). */
  dtype?: DType;
  /** Generator for the initialisation (reproducible init). */
  generator?: Generator;
}

const OPTION_KEYS = new Set([
  "depth",
  "width",
  "stem",
  "inChannels",
  "numClasses",
  "zeroInitResidual",
  "channelsLast",
  "dtype",
  "generator",
]);

function validate(
  options: ResNetOptions,
): Required<Omit<ResNetOptions, "generator" | "numClasses">> & { numClasses: number } {
  if (typeof options !== "object" || options === null) throw new TypeError("ResNet: options must be an object");
  for (const key of Object.keys(options)) {
    if (!OPTION_KEYS.has(key))
      throw new TypeError(`ResNet: unknown option '${key}' (expected one of ${[...OPTION_KEYS].join(", ")})`);
  }
  const depth = options.depth ?? 18;
  if (!Object.prototype.hasOwnProperty.call(ARCH, depth)) {
    throw new RangeError(`ResNet: depth must be one of ${Object.keys(ARCH).join(", ")}, got ${String(depth)}`);
  }
  const width = options.width ?? 64;
  if (!Number.isInteger(width) || width <= 0)
    throw new RangeError(`ResNet: width must be a positive integer, got ${String(width)}`);
  const stem = options.stem ?? "imagenet";
  if (stem !== "imagenet" && stem !== "cifar")
    throw new RangeError(`ResNet: stem must be 'imagenet' or 'cifar', got '${String(stem)}'`);
  const inChannels = options.inChannels ?? 3;
  if (!Number.isInteger(inChannels) || inChannels <= 0) {
    throw new RangeError(`ResNet: inChannels must be a positive integer, got ${String(inChannels)}`);
  }
  const numClasses = options.numClasses === undefined ? 1000 : (options.numClasses ?? 0);
  if (!Number.isInteger(numClasses) || numClasses < 0) {
    throw new RangeError(
      `ResNet: numClasses must be a non-negative integer or null (0/null: no fc layer), got ${String(options.numClasses)}`,
    );
  }
  const dtype = options.dtype ?? "float32";
  if (dtype !== "float32" && dtype !== "float64") {
    throw new RangeError(`ResNet: dtype must be 'float32' or 'float64', got '${String(dtype)}'`);
  }
  for (const key of ["zeroInitResidual", "channelsLast"] as const) {
    if (options[key] !== undefined && typeof options[key] !== "boolean") {
      throw new TypeError(`ResNet: ${key} must be a boolean, got ${String(options[key])}`);
    }
  }
  return {
    depth,
    width,
    stem,
    inChannels,
    numClasses,
    dtype,
    zeroInitResidual: options.zeroInitResidual ?? false,
    channelsLast: options.channelsLast ?? false,
  };
}

/**
 * One stage of a ResNet as a module of its own (a view: its children are the model's own modules,
 * under the model's names). Disposing a stage frees those shared parameters.
 */
export class ResNetStage extends Sequential {
  constructor(
    entries: [string, Module][],
    /** Output channels of this stage. */
    readonly outChannels: number,
    private readonly prepareInput: ((x: Tensor) => Tensor) | null = null,
  ) {
    super();
    for (const [name, m] of entries) this.add(name, m);
  }

  override forward(input: Tensor): Tensor {
    return super.forward(this.prepareInput ? this.prepareInput(input) : input);
  }
}

/** A ResNet with torchvision's structure and parameter names. */
export class ResNet extends Module {
  readonly depth: ResNetDepth;
  readonly width: number;
  readonly stem: ResNetStem;
  readonly inChannels: number;
  readonly numClasses: number;
  readonly block: BlockType;

  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly relu: ReLU;
  /** 3×3 stride-2 max pool (imagenet stem) or Identity (cifar stem). */
  readonly maxpool: MaxPool2d | Identity;
  readonly layer1: Sequential;
  readonly layer2: Sequential;
  readonly layer3: Sequential;
  readonly layer4: Sequential;
  readonly avgpool: AdaptiveAvgPool2d;
  /** The classifier, or null when numClasses is 0. */
  readonly fc: Linear | null;

  #channelsLast: boolean;
  #stages: ResNetStage[] | null = null;

  constructor(options: ResNetOptions = {}) {
    super();
    const o = validate(options);
    this.depth = o.depth;
    this.width = o.width;
    this.stem = o.stem;
    this.inChannels = o.inChannels;
    this.numClasses = o.numClasses;
    const { block, layers } = ARCH[o.depth];
    this.block = block;
    const common = { dtype: o.dtype, generator: options.generator };

    this.conv1 = this.registerModule(
      "conv1",
      o.stem === "imagenet"
        ? new Conv2d(o.inChannels, o.width, 7, { stride: 2, padding: 3, bias: false, ...common })
        : new Conv2d(o.inChannels, o.width, 3, { stride: 1, padding: 1, bias: false, ...common }),
    );
    this.bn1 = this.registerModule("bn1", new BatchNorm2d(o.width, { dtype: o.dtype }));
    this.relu = this.registerModule("relu", new ReLU(true));
    this.maxpool = this.registerModule(
      "maxpool",
      o.stem === "imagenet" ? new MaxPool2d(3, { stride: 2, padding: 1 }) : new Identity(),
    );
    let inplanes = o.width;
    const layer = (i: number): Sequential => {
      const planes = o.width * 2 ** i;
      const l = makeResLayer(block, inplanes, planes, layers[i], { stride: i === 0 ? 1 : 2, ...common });
      inplanes = planes * block.expansion;
      return l;
    };
    this.layer1 = this.registerModule("layer1", layer(0));
    this.layer2 = this.registerModule("layer2", layer(1));
    this.layer3 = this.registerModule("layer3", layer(2));
    this.layer4 = this.registerModule("layer4", layer(3));
    this.avgpool = this.registerModule("avgpool", new AdaptiveAvgPool2d(1));
    this.fc = this.registerModule("fc", o.numClasses > 0 ? new Linear(inplanes, o.numClasses, common) : null);

    // torchvision's init: convs kaiming_normal_(fan_out, relu); BN weight 1, bias 0 (their
    // default); fc keeps Linear's default init; optionally the last BN of each branch at 0
    // (Goyal et al. 2017, https://arxiv.org/abs/1706.02677).
    for (const m of this.modules()) {
      if (m instanceof Conv2d)
        init.kaimingNormal_(m.weight, { mode: "fan_out", nonlinearity: "relu", generator: options.generator });
    }
    if (o.zeroInitResidual) {
      for (const m of this.modules()) {
        if (m instanceof BasicBlock || m instanceof Bottleneck) {
          const w = m.lastBN.weight;
          if (w) init.zeros_(w);
        }
      }
    }

    this.#channelsLast = false;
    if (o.channelsLast) this.useChannelsLast(true);
  }

  /** Output channels of the four stages: [w, 2w, 4w, 8w] × expansion. */
  stageChannels(): number[] {
    return [0, 1, 2, 3].map((i) => this.width * 2 ** i * this.block.expansion);
  }

  /** Dimension of forwardFeatures' output (channels of the last stage). */
  get featureDim(): number {
    return this.width * 8 * this.block.expansion;
  }

  get channelsLast(): boolean {
    return this.#channelsLast;
  }

  /**
   * Channels-last mode: the stem and layer1–layer3 store conv weights NHWC and run on
   * channels-last activations (oneDNN's preferred layout); layer4 stays contiguous (NCHW) and its
   * blocks convert their input to it, because at layer4's small feature maps (4×4 for 32 px images,
   * 7×7 for 224 px) oneDNN's NCHW convolutions are the faster ones (measured: docs/engine.md,
   * "Memory formats"). Values are unchanged; state dicts still load (copies keep the layout).
   */
  useChannelsLast(enabled = true): this {
    this.#channelsLast = enabled;
    this.toMemoryFormat(enabled ? "channelsLast" : "contiguous");
    if (enabled) this.layer4.toMemoryFormat("contiguous");
    for (const [i, layer] of this.#layers().entries()) {
      for (const block of layer.children()) {
        if (block instanceof BasicBlock || block instanceof Bottleneck)
          block.inputFormat = enabled ? (i === 3 ? "contiguous" : "channelsLast") : null;
      }
    }
    return this;
  }

  #prepare = (x: Tensor): Tensor => {
    if (this.#channelsLast && x.ndim === 4 && !x.isContiguous("channelsLast")) return x.contiguous("channelsLast");
    return x;
  };

  /**
   * The four stages as modules [stem + layer1, layer2, layer3, layer4]: h_k = stages[k](h_{k−1}).
   * Each is a view over this model's own modules under the same names (stage 1's keys are
   * `conv1.weight`, `bn1.*`, `layer1.*`; stage 2's are `layer2.*`, …), so training a stage trains
   * this model. The same array of the same modules is returned on every call.
   */
  stages(): ResNetStage[] {
    if (this.#stages === null) {
      const ch = this.stageChannels();
      this.#stages = [
        new ResNetStage(
          [
            ["conv1", this.conv1],
            ["bn1", this.bn1],
            ["relu", this.relu],
            ["maxpool", this.maxpool],
            ["layer1", this.layer1],
          ],
          ch[0],
          this.#prepare,
        ),
        new ResNetStage([["layer2", this.layer2]], ch[1]),
        new ResNetStage([["layer3", this.layer3]], ch[2]),
        new ResNetStage([["layer4", this.layer4]], ch[3]),
      ];
    }
    return this.#stages;
  }

  #blocks: Module[] | null = null;

  /**
   * The network as a sequence of blocks, [stem, layer1.0, layer1.1, …, layer4.last], for cutting
   * stages at any block boundary (docs/methods.md, "Memory"). The stem (conv1, bn1, relu, maxpool,
   * and the channels-last conversion) is a view like stages(); the others are the layers' own
   * block modules. The same array is returned on every call.
   */
  blocks(): Module[] {
    if (this.#blocks === null) {
      const stem = new ResNetStage(
        [
          ["conv1", this.conv1],
          ["bn1", this.bn1],
          ["relu", this.relu],
          ["maxpool", this.maxpool],
        ],
        this.width,
        this.#prepare,
      );
      this.#blocks = [stem, ...this.#layers().flatMap((l) => l.children())];
    }
    return this.#blocks;
  }

  #layers(): Sequential[] {
    return [this.layer1, this.layer2, this.layer3, this.layer4];
  }

  /** Output channels of each block of blocks(). */
  blockChannels(): number[] {
    const ch = this.stageChannels();
    return [this.width, ...this.#layers().flatMap((l, i) => l.children().map(() => ch[i]))];
  }

  /** "stem", "layer1.0", … (the blocks' state-dict prefixes, the stem's being conv1/bn1). */
  blockNames(): string[] {
    return ["stem", ...this.#layers().flatMap((l, i) => l.children().map((_, j) => `layer${i + 1}.${j}`))];
  }

  /** Block indices where stages 2, 3, 4 of stages() begin (the stem and layer1 form stage 1). */
  naturalSplit(): number[] {
    const cuts: number[] = [];
    let start = 1;
    for (const l of this.#layers().slice(0, 3)) {
      start += l.children().length;
      cuts.push(start);
    }
    return cuts;
  }

  /** The output of every stage, [h_1, h_2, h_3, h_4]. */
  forwardStages(x: Tensor): Tensor[] {
    const out: Tensor[] = [];
    let h = x;
    for (const s of this.stages()) {
      h = s.forward(h);
      out.push(h);
    }
    return out;
  }

  /** Global average pool of a stage output, flattened to [N, C]. */
  pool(h: Tensor): Tensor {
    return this.avgpool.forward(h).flatten(1);
  }

  /** Features: global average pool of the last stage, flattened to [N, featureDim]. */
  forwardFeatures(x: Tensor): Tensor {
    x = this.#prepare(x);
    x = this.maxpool.forward(this.bn1.forwardReLU(this.conv1.forward(x)));
    x = this.layer4.forward(this.layer3.forward(this.layer2.forward(this.layer1.forward(x))));
    return this.pool(x);
  }

  /** Logits [N, numClasses] when the model has an fc layer, otherwise the pooled features. */
  override forward(x: Tensor): Tensor {
    const features = this.forwardFeatures(x);
    return this.fc ? this.fc.forward(features) : features;
  }

  override extraRepr(): string {
    return `depth=${this.depth}, width=${this.width}, stem=${this.stem}, inChannels=${this.inChannels}, numClasses=${this.numClasses}`;
  }
}

export function resnet18(options: Omit<ResNetOptions, "depth"> = {}): ResNet {
  return new ResNet({ ...options, depth: 18 });
}

export function resnet34(options: Omit<ResNetOptions, "depth"> = {}): ResNet {
  return new ResNet({ ...options, depth: 34 });
}

export function resnet50(options: Omit<ResNetOptions, "depth"> = {}): ResNet {
  return new ResNet({ ...options, depth: 50 });
}

export function resnet101(options: Omit<ResNetOptions, "depth"> = {}): ResNet {
  return new ResNet({ ...options, depth: 101 });
}

export function resnet152(options: Omit<ResNetOptions, "depth"> = {}): ResNet {
  return new ResNet({ ...options, depth: 152 });
}
