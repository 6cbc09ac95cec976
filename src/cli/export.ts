// `loco export`: a run's encoder as safetensors with torchvision's names, and its JSON description.
import * as path from "node:path";
import { exportEncoder } from "../learning/export";
import { type OptionSpec, UsageError } from "./options";

export const exportSpecs: OptionSpec[] = [
  {
    flag: "out",
    type: "string",
    description: "safetensors file to write (the JSON goes beside it, .json for .safetensors)",
    defaultText: "RUN/encoder.safetensors",
  },
];

export function runExport(values: Record<string, unknown>, positionals: string[]): void {
  if (positionals.length !== 1)
    throw new UsageError(`loco export: expected one run directory or checkpoint file, got ${positionals.length}`);
  const target = positionals[0];
  const out = (values.out as string | undefined) ?? path.join(target, "encoder.safetensors");
  if (!out.toLowerCase().endsWith(".safetensors")) throw new UsageError(`--out: must end in .safetensors, got ${out}`);
  let result: ReturnType<typeof exportEncoder>;
  try {
    result = exportEncoder(target, out, (m) => void process.stderr.write(`warning: ${m}\n`));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const e = result.encoder;
  console.log(
    `${e.architecture} (width ${e.width}, ${e.stem} stem, input ${e.inputSize.join("x")}, step ${e.source.step}): ` +
      `${result.tensors} tensors written to ${result.weights}, description in ${result.info}`,
  );
  console.log(
    e.torchvision.loadable
      ? `load it with ${e.torchvision.constructor}.load_state_dict(weights, strict=False): only fc.weight and fc.bias are missing`
      : `note: ${e.torchvision.note}`,
  );
}
