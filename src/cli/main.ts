#!/usr/bin/env node
// The `loco` command.
import { VERSION } from "../version";
import { formatHelp, parseArgs, type OptionSpec, UsageError } from "./options";
import { memorySpecs, runMemory } from "./memory";
import { runTrain, trainSpecs } from "./train";
import { embedSpecs, evalSpecs, runEmbed, runEval } from "./evaluate";
import { exportSpecs, runExport } from "./export";
import { finetuneSpecs, runFinetune } from "./finetune";
import { reportSpecs, runReport } from "./report-command";
import { experimentSpecs, runExperimentCommand } from "./experiment";
import { launchSpecs, launchUsage, runLaunch } from "./launch";
import { stopWithParentFromEnv } from "../torch/signals";

interface Command {
  summary: string;
  specs: OptionSpec[];
  usage?: string;
  /** The positional arguments the command takes, at most (default: none; a stray one is an error). */
  maxPositionals?: number;
  /** Everything after `--` is handed to run() untouched, as its positionals. */
  passThrough?: boolean;
  /** `given`: the fields set by a flag or the config file (the others hold their defaults). */
  run: (values: Record<string, unknown>, positionals: string[], given: ReadonlySet<string>) => void | Promise<void>;
  /** Config-file fields that are read and ignored (a run's config.json carries its resolved options). */
  ignoreConfigFields?: string[];
}

const commands: Record<string, Command> = {
  train: {
    summary:
      "Pretrain an encoder (SimCLR end to end, GIM, LoCo or any router configuration), then read it out against baselines.",
    specs: trainSpecs,
    run: runTrain,
    ignoreConfigFields: ["resolved"],
  },
  eval: {
    summary:
      "Read out a run's checkpoint: linear readout and kNN on frozen features, per stage and beside baselines on request.",
    specs: evalSpecs,
    usage: "loco eval <run dir | checkpoint file> [options]",
    maxPositionals: 1,
    run: runEval,
  },
  embed: {
    summary: "Write a run's frozen features of a dataset split (and the labels) as a safetensors file.",
    specs: embedSpecs,
    usage: "loco embed <run dir | checkpoint file> [options]",
    maxPositionals: 1,
    run: runEmbed,
  },
  finetune: {
    summary:
      "Fine-tune a run's encoder with a fresh linear head on 1%/10%/100% of the labels (SimCLR's recipe), or from random init.",
    specs: finetuneSpecs,
    usage: "loco finetune <run dir | checkpoint file> [--fraction 0.01,0.1] [--from-random-init] [options]",
    maxPositionals: 1,
    run: runFinetune,
  },
  export: {
    summary:
      "Write a run's encoder alone as safetensors with torchvision's parameter names, and a JSON of its input size and normalisation.",
    specs: exportSpecs,
    usage: "loco export <run dir | checkpoint file> [--out encoder.safetensors]",
    maxPositionals: 1,
    run: runExport,
  },
  experiment: {
    summary:
      "Run a grid of runs (the authors' response: methods x ablations x seeds, feedback alignment, baselines), resumably; write results.{md,json,csv} and report.html.",
    specs: experimentSpecs,
    usage: "loco experiment <quick | standard | paper | grid.yaml> [options]",
    maxPositionals: 1,
    run: runExperimentCommand,
  },
  report: {
    summary:
      "Write a self-contained report.html (tables and SVG charts: loss, kNN, readout, per-stage, memory, time) for a run or experiment directory.",
    specs: reportSpecs,
    usage: "loco report <run dir | experiment dir> [options]",
    maxPositionals: 1,
    run: runReport,
  },
  memory: {
    summary:
      "Measure peak training-step memory of SimCLR end to end, GIM and LoCo per split and overlap mode, per block (--blocks) and under a budget (--budget), with the engine's counting allocator.",
    specs: memorySpecs,
    run: runMemory,
  },
  launch: {
    summary: "Start the local ranks of a distributed job like torchrun (rendezvous variables, cores per rank).",
    specs: launchSpecs,
    usage: launchUsage,
    passThrough: true,
    run: runLaunch,
  },
};

function mainHelp(): string {
  const lines = ["Usage: loco <command> [options]", "       loco --version", "", "Commands:"];
  for (const [name, c] of Object.entries(commands)) lines.push(`  ${name.padEnd(12)}${c.summary}`);
  lines.push("", "Run `loco <command> --help` for a command's options.");
  return lines.join("\n");
}

async function main(argv: string[]): Promise<number> {
  // A child of `loco experiment` stops when the experiment dies, even by SIGKILL.
  stopWithParentFromEnv();
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    console.log(mainHelp());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "-V" || name === "version") {
    console.log(`loco ${VERSION} (CPU)`);
    return 0;
  }
  const command = commands[name];
  if (command === undefined) {
    console.error(`loco: unknown command '${name}'\n\n${mainHelp()}`);
    return 2;
  }
  const dashes = command.passThrough ? rest.indexOf("--") : -1;
  const own = dashes >= 0 ? rest.slice(0, dashes) : rest;
  const parsed = parseArgs(own, command.specs, name, { ignoreConfigFields: command.ignoreConfigFields });
  if (parsed.help) {
    console.log(formatHelp(name, command.summary, command.specs, command.usage));
    return 0;
  }
  if (command.passThrough && parsed.positionals.length > 0) {
    throw new UsageError(`unexpected argument '${parsed.positionals[0]}': put the command after \`--\``);
  }
  const maxPositionals = command.maxPositionals ?? 0;
  if (!command.passThrough && parsed.positionals.length > maxPositionals) {
    const stray = parsed.positionals.slice(maxPositionals).map((p) => `'${p}'`);
    throw new UsageError(
      `loco ${name}: unexpected argument${stray.length > 1 ? "s" : ""} ${stray.join(" ")} ` +
        `(options start with --; see \`loco ${name} --help\`)`,
    );
  }
  const passed = dashes >= 0 ? rest.slice(dashes + 1) : parsed.positionals;
  await command.run(parsed.values, passed, parsed.given);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    // A command may have set its own status (an interrupted `loco train` exits 130).
    if (code !== 0 || process.exitCode === undefined) process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UsageError) {
      console.error(`loco: ${error.message}`);
      process.exitCode = 2;
    } else if ((error as { userFacing?: unknown }).userFacing === true) {
      // Errors the user can act on (bad run directory, full disk, divergence): the message, no stack.
      console.error(`loco: ${(error as Error).message}`);
      process.exitCode = Number((error as { exitCode?: unknown }).exitCode ?? 1) || 1;
    } else {
      console.error(`loco: ${(error as Error).stack ?? String(error)}`);
      process.exitCode = 1;
    }
  },
);
