// `loco launch`: starts the local ranks of a distributed job (src/parallel/launcher.ts).
import * as path from "node:path";
import { launch } from "../parallel/launcher";
import { type OptionSpec, UsageError } from "./options";

export const launchUsage = "loco launch --nproc N [options] -- <program> [arguments]";

export const launchSpecs: OptionSpec[] = [
  { flag: "nproc", type: "int", min: 1, description: "ranks to start on this machine", defaultText: "required" },
  { flag: "nnodes", type: "int", min: 1, default: 1, description: "machines in the job" },
  { flag: "node-rank", type: "int", min: 0, default: 0, description: "this machine's index in [0, nnodes)" },
  {
    flag: "master-addr",
    type: "string",
    description: "address of node 0 (hosts the rendezvous store); required with --nnodes > 1",
    defaultText: "127.0.0.1",
  },
  { flag: "master-port", type: "int", min: 1, max: 65535, default: 29500, description: "port of the rendezvous store" },
  {
    flag: "threads-per-rank",
    type: "int",
    min: 1,
    description: "libtorch/OpenMP threads per rank",
    defaultText: "cores / nproc, at least 1",
  },
  {
    flag: "stop-grace",
    type: "number",
    min: 0,
    default: 10,
    description: "seconds a rank may take to stop after another failed, before it is killed",
  },
];

const locoCommands = new Set(["train", "eval", "embed", "memory"]);
// The loco commands that know they are one rank of several (`loco train --parallel data|stages`); N
// independent copies of another command would write the same files.
const rankAwareCommands = new Set<string>(["train"]);

export async function runLaunch(values: Record<string, unknown>, command: string[]): Promise<void> {
  if (values.nproc === undefined) throw new UsageError("--nproc is required (see `loco launch --help`)");
  if (command.length === 0) throw new UsageError(`nothing to launch: ${launchUsage}`);
  if (locoCommands.has(command[0]) && !rankAwareCommands.has(command[0])) {
    throw new UsageError(
      `\`loco ${command[0]}\` does not run on several ranks (\`loco train --parallel data|stages\` does); ` +
        "launch a script built on loco's parallel building blocks instead (docs/distributed.md)",
    );
  }
  // A loco command runs through this same CLI; anything else is a program on the PATH.
  const argv = locoCommands.has(command[0]) ? [process.execPath, path.join(__dirname, "main.js"), ...command] : command;
  const result = await launch({
    command: argv,
    nproc: values.nproc as number,
    nnodes: values.nnodes as number,
    nodeRank: values.nodeRank as number,
    masterAddr: values.masterAddr as string | undefined,
    masterPort: values.masterPort as number,
    threadsPerRank: values.threadsPerRank as number | undefined,
    stopGraceMs: (values.stopGrace as number) * 1000,
  });
  process.exitCode = result.exitCode;
}
