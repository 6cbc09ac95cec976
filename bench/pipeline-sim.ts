// `node dist/bench/pipeline-sim.js FILE`: the pipeline simulator on per-block times measured by
// `npm run bench:parallel` (FILE: its --json output, or any JSON object with `blocks: {conv, mlp}`
// as there and `model.images`), without measuring anything: for each schedule (end to end, GIM,
// LoCo sync, LoCo pipelined) and each K of --ranks (2,4,8,16), K ranks of one stage each cut where
// the simulator predicts them fastest: images/s, speedup over the same K-stage learner in one
// process, and each rank's wait share. --latency-ms and --bytes-per-ms set the link (default:
// 0.1 ms and 1e6 bytes/ms, loopback TCP roughly); --json prints one line.
import * as fs from "node:fs";
import { LOOPBACK_LINK, type Link } from "../src/learning";
import { type BlockCosts, CASES, type Prediction, Predictor } from "./parallel-predict";

interface Options {
  file: string;
  ranks: number[];
  link: Link;
  json: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { file: "", ranks: [2, 4, 8, 16], link: { ...LOOPBACK_LINK }, json: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const number = (): number => {
      const v = Number(argv[++i]);
      if (!(v > 0)) throw new Error(`${flag}: expected a positive number, got '${argv[i]}'`);
      return v;
    };
    if (flag === "--json") o.json = true;
    else if (flag === "--ranks") {
      o.ranks = (argv[++i] ?? "").split(",").map(Number);
      if (!o.ranks.every((k) => Number.isInteger(k) && k >= 1)) throw new Error(`--ranks: expected e.g. 2,4,8,16`);
    } else if (flag === "--latency-ms") o.link.latencyMs = number();
    else if (flag === "--bytes-per-ms") o.link.bytesPerMs = number();
    else if (flag.startsWith("--")) throw new Error(`unknown option ${flag}`);
    else o.file = flag;
  }
  if (o.file === "")
    throw new Error("usage: node dist/bench/pipeline-sim.js FILE (the output of npm run -s bench:parallel -- --json)");
  return o;
}

function readBlocks(file: string): { blocks: BlockCosts; images: number } {
  let parsed: { blocks?: BlockCosts; model?: { images?: number } };
  try {
    parsed = JSON.parse(fs.readFileSync(file, "utf8")) as typeof parsed;
  } catch (error) {
    throw new Error(`${file}: cannot read the measured times (${(error as Error).message})`);
  }
  const { blocks, model } = parsed;
  if (!Array.isArray(blocks?.conv) || !Array.isArray(blocks?.mlp) || typeof model?.images !== "number") {
    throw new Error(
      `${file}: expected the JSON of npm run bench:parallel -- --json (fields blocks.conv, blocks.mlp, model.images)`,
    );
  }
  return { blocks, images: model.images };
}

function main(): void {
  const o = parseArgs(process.argv.slice(2));
  const { blocks, images } = readBlocks(o.file);
  const predictor = new Predictor(blocks, images, o.link);
  const predictions: Prediction[] = [];
  for (const c of CASES) {
    for (const k of o.ranks) if (k <= predictor.costsOf(c.method).length) predictions.push(predictor.predict(c, k));
  }
  if (o.json) {
    process.stdout.write(`${JSON.stringify({ images, link: o.link, predictions })}\n`);
    return;
  }
  const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
  console.log("| method | ranks | cuts | images/s | speedup | wait per rank |");
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (const p of predictions) {
    console.log(
      `| ${p.name} | ${p.ranks} | ${p.cuts.join(",")} | ${p.imagesPerSecond} | ${p.speedup}x | ${p.waitShare.map(pct).join(" ")} |`,
    );
  }
}

try {
  main();
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exit(2);
}
