// The run directory: its lock, the free-space check, the one atomic writer of its files, and the
// rule of when a directory may (re)start a run.
import * as fs from "node:fs";
import * as path from "node:path";
import { listCheckpoints, removeStaleTemporaries } from "./checkpoint";
import { TrainingError } from "./errors";

/**
 * Writes `file` atomically: a temporary beside it, fsynced, renamed into place; a failure removes
 * the temporary and throws a TrainingError naming the file (the previous content stays intact).
 */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const bytes = typeof data === "string" ? Buffer.from(data) : data;
    const fd = fs.openSync(tmp, "w");
    try {
      for (let done = 0; done < bytes.length;) done += fs.writeSync(fd, bytes, done, bytes.length - done);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (error) {
    fs.rmSync(tmp, { force: true });
    const full = (error as NodeJS.ErrnoException).code === "ENOSPC" ? ": the disk is full, free some space" : "";
    throw new TrainingError(`cannot write ${file} (${(error as Error).message})${full}`);
  }
}

/** JSON (2-space indented, newline-terminated), written atomically. */
export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`);
}

export function formatBytes(n: number): string {
  return n >= 2 ** 30
    ? `${(n / 2 ** 30).toFixed(1)} GiB`
    : n >= 2 ** 20
      ? `${(n / 2 ** 20).toFixed(1)} MiB`
      : `${Math.ceil(n / 1024)} KiB`;
}

/**
 * Throws a TrainingError unless the file system holding `dir` has `needed` bytes free (checked
 * before training starts, so that a full disk is reported up front, not at the first checkpoint).
 */
export function checkFreeSpace(dir: string, needed: number, what: string): void {
  let free: number;
  try {
    const st = fs.statfsSync(dir);
    free = Number(st.bavail) * Number(st.bsize);
  } catch {
    return; // no statfs here: the write probe and the checkpoint writes still report errors
  }
  if (free < needed) {
    throw new TrainingError(
      `${dir}: only ${formatBytes(free)} free on its file system, but ${what} need about ${formatBytes(needed)}; ` +
        `nothing was trained: free some space (then: loco train --resume ${dir}), or choose another --run-dir or a lower --keep-checkpoints`,
    );
  }
}

/** Whether process `pid` runs (EPERM: it does, under another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** What lockDirectory says when it cannot take a lock: the caller's own error, naming the directory. */
export interface LockErrors {
  /** Another live process (pid) holds the lock. */
  inUse(pid: number): Error;
  /** The lock file cannot be written or read (permissions, a full disk, ...). */
  unusable(cause: Error): Error;
}

/**
 * Takes DIR/.lock for this process and returns the release function. The lock file is written
 * whole under a private name and then hard-linked into place, so it appears atomically with its pid
 * in it (a reader never sees an empty lock and takes it for a stale one). A lock left by a process
 * that no longer runs is taken over; one held by a live process throws `errors.inUse(pid)`.
 * Release removes the lock only while it is still this process's.
 */
export function lockDirectory(dir: string, errors: LockErrors): () => void {
  const file = path.join(dir, ".lock");
  const mine = `${file}.${process.pid}`;
  try {
    fs.writeFileSync(mine, `${process.pid}\n`);
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        fs.linkSync(mine, file); // fails if the lock exists
        return () => {
          try {
            if (fs.readFileSync(file, "utf8").trim() === String(process.pid)) fs.rmSync(file, { force: true });
          } catch {
            // already gone
          }
        };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      }
      const holder = Number(fs.readFileSync(file, "utf8").trim());
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && processAlive(holder)) {
        throw errors.inUse(holder);
      }
      fs.rmSync(file, { force: true }); // left by a process that died
    }
    throw new Error(`the lock ${file} was taken and released three times in a row`);
  } catch (error) {
    if ((error as { userFacing?: boolean }).userFacing) throw error;
    throw errors.unusable(error as Error);
  } finally {
    fs.rmSync(mine, { force: true });
  }
}

/** Takes runDir/.lock for this training process (lockDirectory). */
export function acquireRunLock(runDir: string): () => void {
  return lockDirectory(runDir, {
    inUse: (pid) =>
      new TrainingError(
        `${runDir} is in use by another loco process (pid ${pid}); wait for it to finish or stop it first`,
      ),
    unusable: (cause) => new TrainingError(`run directory ${runDir} is not writable (${cause.message})`, 2),
  });
}

/**
 * statfs magic numbers of pseudo file systems (proc, sysfs, devpts, cgroup, cgroup2, debugfs,
 * securityfs, tracefs, bpf, pstore, configfs, efivarfs): no place for a run, and Node's recursive
 * mkdir spins forever under /proc.
 */
const PSEUDO_FILE_SYSTEMS = new Map<number, string>([
  [0x9fa0, "proc"],
  [0x62656572, "sysfs"],
  [0x1cd1, "devpts"],
  [0x27e0eb, "cgroup"],
  [0x63677270, "cgroup2"],
  [0x64626720, "debugfs"],
  [0x73636673, "securityfs"],
  [0x74726163, "tracefs"],
  [0xcafe4a11, "bpf"],
  [0x6165676c, "pstore"],
  [0x62656570, "configfs"],
  [0xde5e81e4, "efivarfs"],
]);

/**
 * Creates `dir` one level at a time (never Node's recursive mkdir, which can spin on pseudo file
 * systems), refusing a directory on a pseudo file system such as /proc or /sys. `what` names the
 * path in errors (e.g. "run directory"); they are usage errors (exit status 2).
 */
export function makeDirectory(dir: string, what: string): void {
  const missing: string[] = [];
  let existing = path.resolve(dir);
  while (!fs.existsSync(existing)) {
    missing.unshift(existing);
    const parent = path.dirname(existing);
    if (parent === existing) break;
    existing = parent;
  }
  let type: number | undefined;
  try {
    type = Number(fs.statfsSync(existing).type);
  } catch {
    type = undefined; // no statfs here: the mkdir and write probe below still report errors
  }
  const pseudo = type === undefined ? undefined : PSEUDO_FILE_SYSTEMS.get(type);
  if (pseudo !== undefined) {
    throw new TrainingError(
      `${what} ${dir} is on a ${pseudo} pseudo file system (${existing}): choose a directory on a disk`,
      2,
    );
  }
  if (!fs.statSync(existing).isDirectory()) {
    throw new TrainingError(`${what} ${dir} is not writable (ENOTDIR: ${existing} is not a directory)`, 2);
  }
  for (const level of missing) {
    try {
      fs.mkdirSync(level);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") {
        throw new TrainingError(`${what} ${dir} cannot be created (${(error as Error).message})`, 2);
      }
    }
  }
}

/**
 * Checks, before any work, that `file` can be written: its folder exists (or can be made) on a real
 * file system and `file` is not a directory. A usage error naming `flag` otherwise.
 */
export function checkOutputFile(file: string, flag: string): void {
  const prefix = `${flag} ${file}:`;
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) throw new TrainingError(`${prefix} is a directory`, 2);
  try {
    makeDirectory(path.dirname(path.resolve(file)), "the folder of");
  } catch (error) {
    throw new TrainingError(`${prefix} ${(error as Error).message}`, 2);
  }
  try {
    fs.accessSync(path.dirname(path.resolve(file)), fs.constants.W_OK);
  } catch (error) {
    throw new TrainingError(`${prefix} its folder is not writable (${(error as Error).message})`, 2);
  }
}

/** Creates runDir (and its parents) and checks that a file can be written in it (exit status 2 if not). */
function makeWritable(runDir: string): void {
  makeDirectory(runDir, "run directory");
  try {
    const probe = path.join(runDir, `.write-probe-${process.pid}`);
    fs.writeFileSync(probe, "probe");
    fs.rmSync(probe);
  } catch (error) {
    throw new TrainingError(`run directory ${runDir} is not writable (${(error as Error).message})`, 2);
  }
}

/** A locked run directory; `release` drops the lock. */
export interface RunDirectory {
  dir: string;
  release: () => void;
}

/**
 * Opens runDir for training and locks it. A fresh run is refused when the directory holds a run
 * that wrote a checkpoint (--resume continues it); a directory whose run never wrote one (a failed
 * start) is started again, its old config and metrics replaced. Temporaries of checkpoint writes
 * that never finished are removed.
 */
export function openRunDirectory(runDir: string, resume: boolean, log: (m: string) => void): RunDirectory {
  if (resume && !fs.existsSync(path.join(runDir, "config.json"))) {
    throw new TrainingError(
      `--resume: ${path.join(runDir, "config.json")} does not exist (not a loco run directory)`,
      2,
    );
  }
  makeWritable(runDir);
  const release = acquireRunLock(runDir);
  try {
    if (!resume && fs.existsSync(path.join(runDir, "config.json"))) {
      if (listCheckpoints(runDir).length > 0) {
        throw new TrainingError(
          `${runDir} already holds a run (use --resume ${runDir} to continue it, or another --run-dir)`,
          2,
        );
      }
      log(`${runDir} holds a run that never wrote a checkpoint: it starts again`);
      fs.rmSync(path.join(runDir, "metrics.jsonl"), { force: true });
    }
    for (const file of removeStaleTemporaries(runDir)) log(`removed ${file}, left by a write that never finished`);
  } catch (error) {
    release();
    throw error;
  }
  return { dir: runDir, release };
}
