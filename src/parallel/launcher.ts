// Starts the local ranks of a distributed job, like torchrun: sets the rendezvous variables,
// divides the cores among the ranks, prefixes each rank's output lines with `[rank i]`, forwards
// SIGINT/SIGTERM once, and when one rank fails stops the others and reports it (docs/distributed.md).
import { type ChildProcess, spawn } from "node:child_process";
import * as os from "node:os";

export interface LaunchOptions {
  /** The program and its arguments, run once per local rank. */
  command: readonly string[];
  /** Ranks on this machine. */
  nproc: number;
  /** Machines in the job (default 1). */
  nnodes?: number;
  /** This machine's index in [0, nnodes) (default 0); its ranks are nodeRank·nproc + i. */
  nodeRank?: number;
  /** Host of global rank 0's rendezvous store (default 127.0.0.1; required with nnodes > 1). */
  masterAddr?: string;
  /** Port of the rendezvous store (default 29500). */
  masterPort?: number;
  /** libtorch/OpenMP threads per rank (default: this machine's cores / nproc, at least 1). */
  threadsPerRank?: number;
  /** How long a rank may take to exit after SIGTERM before it is killed, in ms (default 10000). */
  stopGraceMs?: number;
  /** Extra environment for every rank (on top of this process's). */
  env?: NodeJS.ProcessEnv;
  /** Where the ranks' prefixed output goes (default this process's stdout and stderr). */
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  /** Cores to divide (default os.availableParallelism()). */
  cores?: number;
}

export interface RankExit {
  rank: number;
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LaunchResult {
  /** 0 when every rank succeeded; the first failed rank's status; 128 + signal when interrupted. */
  exitCode: number;
  /** The global rank that failed first, if any. */
  failedRank: number | null;
  ranks: RankExit[];
  threadsPerRank: number;
}

export class LaunchError extends Error {
  readonly userFacing = true;
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = "LaunchError";
  }
}

export interface RankPlan {
  rank: number;
  localRank: number;
  env: Record<string, string>;
}

/** The ranks this machine starts and each one's variables (checked; throws LaunchError). */
export function planRanks(options: LaunchOptions): { ranks: RankPlan[]; threadsPerRank: number } {
  const nnodes = options.nnodes ?? 1;
  const nodeRank = options.nodeRank ?? 0;
  const masterPort = options.masterPort ?? 29500;
  if (options.command.length === 0) throw new LaunchError("no command to launch (put it after `--`)");
  for (const [name, value, min] of [
    ["nproc", options.nproc, 1],
    ["nnodes", nnodes, 1],
    ["node-rank", nodeRank, 0],
    ["master-port", masterPort, 1],
  ] as const) {
    if (!Number.isInteger(value) || value < min)
      throw new LaunchError(`--${name} must be an integer >= ${min}, got ${value}`);
  }
  if (masterPort > 65535) throw new LaunchError(`--master-port must be at most 65535, got ${masterPort}`);
  if (nodeRank >= nnodes) throw new LaunchError(`--node-rank must be below --nnodes (${nnodes}), got ${nodeRank}`);
  if (nnodes > 1 && options.masterAddr === undefined) {
    throw new LaunchError(
      "--master-addr is required with --nnodes > 1 (the address of node 0, reachable from every node)",
    );
  }
  const cores = options.cores ?? os.availableParallelism();
  const threadsPerRank = options.threadsPerRank ?? Math.max(1, Math.floor(cores / options.nproc));
  if (!Number.isInteger(threadsPerRank) || threadsPerRank < 1) {
    throw new LaunchError(`--threads-per-rank must be an integer >= 1, got ${threadsPerRank}`);
  }
  const worldSize = nnodes * options.nproc;
  const ranks = Array.from({ length: options.nproc }, (_, localRank) => {
    const rank = nodeRank * options.nproc + localRank;
    const env: Record<string, string> = {
      MASTER_ADDR: options.masterAddr ?? "127.0.0.1",
      MASTER_PORT: String(masterPort),
      WORLD_SIZE: String(worldSize),
      RANK: String(rank),
      LOCAL_RANK: String(localRank),
      LOCAL_WORLD_SIZE: String(options.nproc),
      GROUP_RANK: String(nodeRank),
      // OpenMP threads busy-wait: ranks × threads above the core count runs several times slower.
      OMP_NUM_THREADS: String(threadsPerRank),
      LOCO_NUM_THREADS: String(threadsPerRank),
    };
    return { rank, localRank, env };
  });
  return { ranks, threadsPerRank };
}

/** Writes a stream's lines with a prefix; a partial last line waits for its newline (or the end). */
function prefixLines(source: NodeJS.ReadableStream, prefix: string, sink: NodeJS.WritableStream): Promise<void> {
  let pending = "";
  source.setEncoding("utf8");
  source.on("data", (chunk: string) => {
    const lines = (pending + chunk).split("\n");
    pending = lines.pop()!;
    if (lines.length > 0) sink.write(lines.map((l) => `${prefix}${l}\n`).join(""));
  });
  return new Promise((resolve) =>
    source.on("end", () => {
      if (pending !== "") sink.write(`${prefix}${pending}\n`);
      resolve();
    }),
  );
}

const signalNumber = (signal: NodeJS.Signals): number => os.constants.signals[signal] ?? 1;

/**
 * Runs the local ranks to completion. Resolves when every rank has exited (after a failure, once
 * the others were stopped); never rejects for a rank's failure, which is in the result.
 */
export async function launch(options: LaunchOptions): Promise<LaunchResult> {
  const { ranks, threadsPerRank } = planRanks(options);
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  const stopGraceMs = options.stopGraceMs ?? 10_000;
  const note = (text: string): boolean => stderr.write(`[launch] ${text}\n`);
  const children: ChildProcess[] = [];
  const exits: RankExit[] = [];
  let failedRank: number | null = null;
  let failedStatus = 0;
  let interrupted: NodeJS.Signals | null = null;
  let killTimer: NodeJS.Timeout | null = null;

  const stopOthers = (signal: NodeJS.Signals): void => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    killTimer ??= setTimeout(() => {
      for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }, stopGraceMs);
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted !== null) {
      note(`${signal} again: killing the ranks`);
      for (const child of children) child.kill("SIGKILL");
      return;
    }
    interrupted = signal;
    note(`${signal}: passing it to the ranks (again to kill them)`);
    for (const child of children) child.kill(signal);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    const finished = ranks.map((plan) => {
      // Each rank gets its own process group: a terminal's Ctrl-C reaches only the launcher, which
      // forwards it once (twice would make a training rank abandon its step).
      const child = spawn(options.command[0], options.command.slice(1), {
        env: { ...process.env, ...options.env, ...plan.env },
        stdio: ["ignore", "pipe", "pipe"],
        detached: true,
      });
      children.push(child);
      const prefix = `[rank ${plan.rank}] `;
      const streams = Promise.all([
        prefixLines(child.stdout!, prefix, stdout),
        prefixLines(child.stderr!, prefix, stderr),
      ]);
      return new Promise<void>((resolve) => {
        child.on("error", (error) => {
          note(`rank ${plan.rank} could not start ${options.command[0]}: ${error.message}`);
        });
        child.on("close", (code, signal) => {
          void streams.then(() => {
            exits.push({ rank: plan.rank, code, signal });
            const ok = code === 0;
            if (!ok && failedRank === null && interrupted === null) {
              failedRank = plan.rank;
              failedStatus = code ?? 128 + signalNumber(signal ?? "SIGKILL");
              const how = signal !== null ? `was killed by ${signal}` : `exited with status ${code}`;
              const others = children.filter((c) => c !== child && c.exitCode === null && c.signalCode === null);
              note(`rank ${plan.rank} ${how}${others.length > 0 ? "; stopping the other ranks" : ""}`);
              stopOthers("SIGTERM");
            }
            resolve();
          });
        });
      });
    });
    await Promise.all(finished);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (killTimer !== null) clearTimeout(killTimer);
  }
  exits.sort((a, b) => a.rank - b.rank);
  let exitCode = 0;
  if (failedRank !== null) exitCode = failedStatus === 0 ? 1 : failedStatus;
  else if (interrupted !== null) exitCode = 128 + signalNumber(interrupted);
  return { exitCode, failedRank, ranks: exits, threadsPerRank };
}
