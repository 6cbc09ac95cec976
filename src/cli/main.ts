#!/usr/bin/env node
// The `loco` command.
import { VERSION } from "../version";
import { formatHelp, parseArgs, type OptionSpec, UsageError } from "./options";
import { memorySpecs, runMemory } from "./memory";
import { runTrain, trainSpecs } from "./train";
import { embedSpecs, evalSpecs, runEmbed, runEval } from "./evaluate";

interface Command {
  summary: string;
  specs: OptionSpec[];
  usage?: string;
  /** The positional arguments the command takes, at most (default: none; a stray one is an error). */
  maxPositionals?: number;
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
  memory: {
    summary:
      "Measure peak training-step memory of SimCLR end to end, GIM and LoCo with the engine's counting allocator.",
    specs: memorySpecs,
    run: runMemory,
  },
};

function mainHelp(): string {
  const lines = ["Usage: loco <command> [options]", "       loco --version", "", "Commands:"];
  for (const [name, c] of Object.entries(commands)) lines.push(`  ${name.padEnd(10)}${c.summary}`);
  lines.push("", "Run `loco <command> --help` for a command's options.");
  return lines.join("\n");
}

async function main(argv: string[]): Promise<number> {
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
  const parsed = parseArgs(rest, command.specs, name, { ignoreConfigFields: command.ignoreConfigFields });
  if (parsed.help) {
    console.log(formatHelp(name, command.summary, command.specs, command.usage));
    return 0;
  }
  const maxPositionals = command.maxPositionals ?? 0;
  if (parsed.positionals.length > maxPositionals) {
    const stray = parsed.positionals.slice(maxPositionals).map((p) => `'${p}'`);
    throw new UsageError(
      `loco ${name}: unexpected argument${stray.length > 1 ? "s" : ""} ${stray.join(" ")} ` +
        `(options start with --; see \`loco ${name} --help\`)`,
    );
  }
  await command.run(parsed.values, parsed.positionals, parsed.given);
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
