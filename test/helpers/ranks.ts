// Starting test ranks as child processes on 127.0.0.1 with a free port, one libtorch thread each.
import { spawn } from "node:child_process";
import * as net from "node:net";
import * as path from "node:path";
import { type Run, show, startLoco } from "./runs";

/** A TCP port nobody listens on right now (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface RankOutcome {
  rank: number;
  /** Exit status; null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The parsed `RESULT <json>` line, or undefined when the rank printed none. */
  result: Record<string, unknown> | undefined;
  stdout: string;
  stderr: string;
}

/** Runs `script scenario` as ranks `ranks` of a group of `worldSize` and collects each one's outcome. */
export function runRanks(
  script: string,
  scenario: string,
  options: { worldSize: number; ranks?: number[]; port: number; timeoutMs: number; extraEnv?: Record<string, string> },
): Promise<RankOutcome[]> {
  const ranks = options.ranks ?? Array.from({ length: options.worldSize }, (_, i) => i);
  return Promise.all(
    ranks.map(
      (rank) =>
        new Promise<RankOutcome>((resolve) => {
          const child = spawn(process.execPath, [path.resolve(script), scenario], {
            env: {
              ...process.env,
              OMP_NUM_THREADS: "1",
              LOCO_NUM_THREADS: "1",
              MASTER_ADDR: "127.0.0.1",
              MASTER_PORT: String(options.port),
              RANK: String(rank),
              LOCAL_RANK: String(rank),
              WORLD_SIZE: String(options.worldSize),
              LOCO_DIST_TIMEOUT_MS: String(options.timeoutMs),
              ...options.extraEnv,
            },
            stdio: ["ignore", "pipe", "pipe"],
          });
          let stdout = "";
          let stderr = "";
          child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
          child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
          child.on("close", (code, signal) => {
            const line = stdout.split("\n").find((l) => l.startsWith("RESULT "));
            const result = line ? (JSON.parse(line.slice(7)) as Record<string, unknown>) : undefined;
            resolve({ rank, code, signal, result, stdout, stderr });
          });
        }),
    ),
  );
}

/** The rendezvous variables `loco launch` sets for rank `rank` of `worldSize` on this machine. */
export function rankEnv(rank: number, worldSize: number, port: number, timeoutMs: number): NodeJS.ProcessEnv {
  return {
    MASTER_ADDR: "127.0.0.1",
    MASTER_PORT: String(port),
    RANK: String(rank),
    LOCAL_RANK: String(rank),
    WORLD_SIZE: String(worldSize),
    LOCO_DIST_TIMEOUT_MS: String(timeoutMs),
  };
}

/** `loco train args` on ranks 0..worldSize-1 (or the ranks listed), as `loco launch` would start them. */
export async function trainOnRanks(
  args: string[],
  worldSize: number,
  options: { ranks?: number[]; timeoutMs?: number } = {},
): Promise<Run[]> {
  const port = await freePort();
  return Promise.all(
    (options.ranks ?? Array.from({ length: worldSize }, (_, r) => r)).map(
      (rank) => startLoco(["train", ...args], { env: rankEnv(rank, worldSize, port, options.timeoutMs ?? 30000) }).done,
    ),
  );
}

/** Every rank's output, for assertion messages. */
export const showAll = (runs: Run[]): string => runs.map((r, i) => `=== rank ${i}\n${show(r)}`).join("\n");
