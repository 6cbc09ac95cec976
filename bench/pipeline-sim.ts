// `node dist/bench/pipeline-sim.js FILE`: the pipeline simulator on per-block times measured by
// `npm run bench:parallel` (FILE: its --json output, or any JSON object with `blocks: {conv, mlp}`
// as there and `model.images`), without measuring anything: for each schedule (end to end, GIM,
// LoCo sync, LoCo pipelined) and each K of --ranks (2,4,8,16), K ranks of one stage each cut where
// the simulator predicts them fastest: images/s, speedup over the same K-stage learner in one
// process, and each rank's wait share. --latency-ms and --bytes-per-ms set the link (default: the
// one FILE measured between its ranks, else 0.1 ms and 1e6 bytes/ms, loopback TCP roughly);
// --contention F slows ranks that compute at once (default 1: ranks on separate machines; FILE's
// `ceiling.contention` is the factor it measured for 2 processes on its machine); --json prints
// one line.
import * as fs from "node:fs";
import { LOOPBACK_LINK, type Link } from "../src/learning";
import { type BlockCosts, CASES, type Prediction, Predictor } from "./parallel-predict";

interface Options {
  file: string;
  ranks: number[];
  link: Partial<Link>;
  contention: number;
  json: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { file: "", ranks: [2, 4, 8, 16], link: {}, contention: 1, json: false };
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
    else if (flag === "--contention") {
      o.contention = number();
      if (o.contention < 1) throw new Error(`--contention: expected a factor of at least 1, got ${o.contention}`);
    } else if (flag.startsWith("--")) throw new Error(`unknown option ${flag}`);
    else o.file = flag;
  }
  if (o.file === "")
    throw new Error("usage: node dist/bench/pipeline-sim.js FILE (the output of npm run -s bench:parallel -- --json)");
  return o;
}

function readBlocks(file: string): { blocks: BlockCosts; images: number; link: Link } {
  let parsed: { blocks?: BlockCosts; model?: { images?: number }; link?: Link };
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
  const link = typeof parsed.link?.latencyMs === "number" ? parsed.link : LOOPBACK_LINK;
  return { blocks, images: model.images, link };
}

function main(): void {
  const o = parseArgs(process.argv.slice(2));
  const measured = readBlocks(o.file);
  const link: Link = { ...measured.link, ...o.link };
  const predictor = new Predictor(measured.blocks, measured.images, link);
  const tuning = { contention: o.contention };
  const predictions: Prediction[] = [];
  for (const c of CASES) {
    for (const k of o.ranks) {
      if (k <= predictor.costsOf(c.method).length)
        predictions.push(predictor.predict(c, k, predictor.bestCuts(c, k, tuning), tuning));
    }
  }
  if (o.json) {
    const { images } = measured;
    process.stdout.write(`${JSON.stringify({ images, link, contention: o.contention, predictions })}\n`);
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
