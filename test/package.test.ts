// The package as a user imports it: every import path the docs name resolves through package.json's
// exports map, the README's TypeScript example compiles against the published types and runs, and
// project files cite docs/methods.md (the methods reference), never a design file outside the repository.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ENV, haveFashionMnist } from "./helpers/runs";

const ROOT = path.join(__dirname, "..", "..");
const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
const docs = [
  "README.md",
  ...fs
    .readdirSync(path.join(ROOT, "docs"))
    .filter((f) => f.endsWith(".md"))
    .map((f) => path.join("docs", f)),
];

/** A folder whose node_modules/loco is this repository, as after `npm install loco`. */
function consumer(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "loco-consumer-"));
  fs.mkdirSync(path.join(dir, "node_modules"));
  fs.symlinkSync(ROOT, path.join(dir, "node_modules", "loco"), "dir");
  return dir;
}

test("every import path the docs and sources name resolves through the exports map", () => {
  const named = new Set<string>(["loco"]);
  const texts = [...docs.map((f) => fs.readFileSync(path.join(ROOT, f), "utf8"))];
  for (const dir of ["torch", "eval", "learning", "data", "nn", "optim", "models"]) {
    texts.push(fs.readFileSync(path.join(ROOT, "src", dir, "index.ts"), "utf8"));
  }
  for (const text of texts) for (const m of text.matchAll(/["`](loco(?:\/[a-z]+)*)["`]/g)) named.add(m[1]);
  assert.ok(named.size >= 8, `import paths named: ${[...named].join(", ")}`);
  const dir = consumer();
  const script = [...named].map((p) => `require(${JSON.stringify(p)});`).join("\n");
  const r = spawnSync(process.execPath, ["-e", `${script}\nconsole.log("ok")`], {
    cwd: dir,
    env: ENV,
    encoding: "utf8",
  });
  assert.equal(r.status, 0, `${[...named].join(", ")}: ${r.stderr}`);
  fs.rmSync(dir, { recursive: true, force: true });
});

test(
  "the README's TypeScript example compiles against the package's types and runs",
  { skip: haveFashionMnist ? false : "Fashion-MNIST is not installed" },
  () => {
    const m = /<!-- example: package -->\n```ts\n([\s\S]*?)```/.exec(readme);
    assert.ok(m, "README.md has the package example");
    const dir = consumer();
    fs.writeFileSync(path.join(dir, "example.ts"), m[1]);
    const tsc = path.join(ROOT, "node_modules", "typescript", "bin", "tsc");
    const compiled = spawnSync(
      process.execPath,
      [
        tsc,
        "--strict",
        "--target",
        "es2022",
        "--module",
        "node16",
        "--moduleResolution",
        "node16",
        "--skipLibCheck",
        "--types",
        "node",
        "--typeRoots",
        path.join(ROOT, "node_modules", "@types"),
        "example.ts",
      ],
      { cwd: dir, encoding: "utf8" },
    );
    assert.equal(compiled.status, 0, `tsc: ${compiled.stdout}${compiled.stderr}`);
    const run = spawnSync(process.execPath, ["example.js"], { cwd: dir, env: ENV, encoding: "utf8", timeout: 120_000 });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /loco \(losses 1,2,3,4, reach 1, c 1, m 2, t [\d.]+, simultaneous\): linear top-1 0\.\d+/);
    assert.match(run.stdout, /losses per stage: \d+\.\d{3} \d+\.\d{3} \d+\.\d{3} \d+\.\d{3}/);
    assert.ok(fs.existsSync(path.join(dir, "runs")), "the run directory defaults to runs/ under the working directory");
    fs.rmSync(dir, { recursive: true, force: true });
  },
);

test("project files cite docs/methods.md, never a design file outside the repository", () => {
  const offenders: string[] = [];
  const walk = (rel: string): void => {
    const abs = path.join(ROOT, rel);
    if (!fs.existsSync(abs)) return;
    if (fs.statSync(abs).isDirectory()) {
      for (const e of fs.readdirSync(abs)) walk(path.join(rel, e));
      return;
    }
    if (!/\.(ts|md|cpp|h|py|gyp)$/.test(rel)) return;
    const text = fs.readFileSync(abs, "utf8");
    if (/METHODS\.md|shared\/design/.test(text)) offenders.push(rel);
  };
  for (const top of ["src", "test", "docs", "bench", "native", "README.md"]) walk(top);
  // This file names the pattern it looks for.
  assert.deepEqual(
    offenders.filter((f) => f !== path.join("test", "package.test.ts")),
    [],
  );
});
