// The PyTorch oracle: runs a Python script against the system PyTorch (1.13, /usr/bin/python3)
// with the same input tensors loco sees, passed through a safetensors file.
//
//   const out = runOracle(script("ops.py"), { x, w }, ["conv2d"]);
//
// The script is called as `/usr/bin/python3 SCRIPT IN.safetensors OUT.safetensors ...args` and
// normally uses test/oracle/st.py's run(compute) to read IN and write OUT. PyTorch runs with the
// same number of intra-op threads as loco (LOCO_ORACLE_NUM_THREADS), so reductions split alike.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { type Tensor, getNumThreads, loadSafetensors, saveSafetensors } from "../../src/torch";

/** The only interpreter with PyTorch installed (the `python3` on PATH may be another one). */
export const PYTHON = "/usr/bin/python3";

/** Absolute path of a script in test/oracle (works from the compiled dist/test/helpers too). */
export function oracleScript(name: string): string {
  let dir = __dirname;
  for (;;) {
    const candidate = path.join(dir, "test", "oracle", name);
    if (fs.existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`oracle script ${name} not found above ${__dirname}`);
    dir = parent;
  }
}

let available: boolean | undefined;
/** True when /usr/bin/python3 can import torch (tests skip the oracle otherwise). */
export function oracleAvailable(): boolean {
  if (available === undefined) {
    const r = spawnSync(PYTHON, ["-c", "import torch"], { encoding: "utf8", timeout: 60_000 });
    available = r.status === 0;
  }
  return available;
}

export interface OracleOptions {
  /** Wall-clock limit for the script (default 120 s). */
  timeoutMs?: number;
  /** Metadata written with the inputs (the script sees it as its second argument). */
  metadata?: Record<string, string>;
}

/**
 * Runs `scriptPath` on `inputs` and returns the tensors it wrote. Throws with Python's stderr when
 * the script fails. Returned tensors belong to the current scope.
 */
export function runOracle(
  scriptPath: string,
  inputs: Record<string, Tensor> | Map<string, Tensor>,
  args: string[] = [],
  options: OracleOptions = {},
): Record<string, Tensor> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "loco-oracle-"));
  try {
    const inPath = path.join(dir, "in.safetensors");
    const outPath = path.join(dir, "out.safetensors");
    saveSafetensors(inPath, inputs, options.metadata);
    const result = spawnSync(PYTHON, [scriptPath, inPath, outPath, ...args], {
      encoding: "utf8",
      timeout: options.timeoutMs ?? 120_000,
      env: {
        ...process.env,
        LOCO_ORACLE_NUM_THREADS: String(getNumThreads()),
        OMP_NUM_THREADS: String(getNumThreads()),
        PYTHONDONTWRITEBYTECODE: "1",
      },
      maxBuffer: 64 * 1024 * 1024,
    });
    if (result.error) throw new Error(`oracle ${path.basename(scriptPath)} could not run: ${result.error.message}`);
    if (result.status !== 0) {
      throw new Error(
        `oracle ${path.basename(scriptPath)} ${args.join(" ")} failed (exit ${result.status ?? result.signal}):\n${result.stderr}`,
      );
    }
    return Object.fromEntries(loadSafetensors(outPath).tensors);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
