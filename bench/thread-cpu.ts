// CPU time per thread of this process (Linux /proc/self/task/*/schedstat: nanoseconds on a CPU and
// nanoseconds runnable but waiting for one), for `npm run bench:parallel`: unlike wall-clock busy
// time, a thread's CPU time does not grow when the machine is loaded (only its run-queue wait
// does), so it shows what a rank's helper threads (Gloo's, the promise waiters', V8's) take from
// the cores beside the compute thread, loaded or not.
import * as fs from "node:fs";

interface Sample {
  runNs: number;
  queueNs: number;
  /** Times the thread was scheduled onto a CPU (its wake-ups, and its returns after preemption). */
  slices: number;
}

/** Threads alive now, by thread id (empty where /proc is not Linux's). */
function sampleThreads(): Map<number, Sample> {
  const out = new Map<number, Sample>();
  let tids: string[];
  try {
    tids = fs.readdirSync("/proc/self/task");
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const [run, queue, slices] = fs.readFileSync(`/proc/self/task/${tid}/schedstat`, "utf8").trim().split(/\s+/);
      out.set(Number(tid), { runNs: Number(run), queueNs: Number(queue), slices: Number(slices) });
    } catch {
      // The thread exited between the listing and the read: counted in `exitedMs`.
    }
  }
  return out;
}

/**
 * With THREAD_CPU_DETAIL=FILE: every live thread's CPU per step, its name (/proc comm) and group, one
 * line each, to FILE (for telling Gloo's loop from its workers, the waiters and V8's helpers).
 */
function writeThreadDetail(file: string, before: Map<number, Sample>, steps: number, born: Map<number, string>): void {
  const lines: string[] = [];
  for (const [tid, now] of sampleThreads()) {
    const then = before.get(tid) ?? { runNs: 0, queueNs: 0, slices: 0 };
    let name = "?";
    try {
      name = fs.readFileSync(`/proc/self/task/${tid}/comm`, "utf8").trim();
    } catch {
      // exited meanwhile
    }
    const ms = (now.runNs - then.runNs) / 1e6 / steps;
    const slices = (now.slices - then.slices) / steps;
    lines.push(`${tid}\t${name}\t${born.get(tid) ?? "later"}\t${ms.toFixed(3)}\t${slices.toFixed(1)}`);
  }
  fs.writeFileSync(file, `${lines.join("\n")}\n`);
}

/** Milliseconds of CPU per step by thread group, and counts per step (ThreadCpuClock.perStep). */
export type CpuPerStep = Record<string, number>;

/** The parts the bench reports: the compute thread, every other thread, the kernel's share of both, all. */
export const cpuSummary = (c: CpuPerStep): { mainMs: number; helperMs: number; systemMs: number; totalMs: number } => ({
  mainMs: c.mainMs,
  helperMs: Number((c.totalMs - c.mainMs).toFixed(2)),
  systemMs: c.systemMs,
  totalMs: c.totalMs,
});

/** The process's own threads, named by when they appeared: marks taken before and after the group started. */
export class ThreadCpuClock {
  readonly #born = new Map<number, string>();
  #start: { threads: Map<number, Sample>; usage: NodeJS.ResourceUsage } | null = null;

  /** Names the threads alive now that have no name yet (call at start-up, then after creating the group). */
  mark(name: string): void {
    for (const tid of sampleThreads().keys()) if (!this.#born.has(tid)) this.#born.set(tid, name);
  }

  /** Starts the timed window. */
  start(): void {
    this.#start = { threads: sampleThreads(), usage: process.resourceUsage() };
  }

  /**
   * Milliseconds of CPU per step since start(), over `steps` steps: the main (compute) thread, its
   * run-queue wait (runnable but off the CPU: other threads or processes had the cores), each named
   * group of threads, threads born since the marks (`later`), threads that exited meanwhile
   * (`exited`: the process's total less the threads alive), and the process's total.
   */
  perStep(steps: number): CpuPerStep {
    if (this.#start === null) throw new Error("ThreadCpuClock: start() first");
    const now = process.resourceUsage();
    const then = this.#start.usage;
    const totalMs = (now.userCPUTime + now.systemCPUTime - then.userCPUTime - then.systemCPUTime) / 1000;
    const before = this.#start.threads;
    const out: CpuPerStep = { mainMs: 0, mainQueueMs: 0 };
    let aliveMs = 0;
    for (const [tid, now] of sampleThreads()) {
      const then = before.get(tid) ?? { runNs: 0, queueNs: 0, slices: 0 };
      const runMs = (now.runNs - then.runNs) / 1e6;
      aliveMs += runMs;
      if (tid === process.pid) {
        out.mainMs += runMs;
        out.mainQueueMs += (now.queueNs - then.queueNs) / 1e6;
      } else {
        const key = `${this.#born.get(tid) ?? "later"}Ms`;
        out[key] = (out[key] ?? 0) + runMs;
      }
    }
    if (process.env.THREAD_CPU_DETAIL) writeThreadDetail(process.env.THREAD_CPU_DETAIL, before, steps, this.#born);
    out.exitedMs = Math.max(0, totalMs - aliveMs);
    out.totalMs = totalMs;
    // Of which in the kernel (system calls, page faults; costly on a virtual machine).
    out.systemMs = (now.systemCPUTime - then.systemCPUTime) / 1000;
    // Counts per step, which load does not change: minor page faults (memory faulted in afresh)
    // and context switches (a thread blocking, or preempted).
    out.minorFaults = now.minorPageFault - then.minorPageFault;
    out.voluntarySwitches = now.voluntaryContextSwitches - then.voluntaryContextSwitches;
    out.involuntarySwitches = now.involuntaryContextSwitches - then.involuntaryContextSwitches;
    const round = (x: number): number => Number((x / steps).toFixed(2));
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, round(v)]));
  }
}
