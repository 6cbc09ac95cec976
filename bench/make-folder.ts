// `node dist/bench/make-folder.js DIR [--count N] [--classes K] [--val N] [--min 160] [--max 500] [--seed S] [--flat]`:
// writes a generated image folder of JPEGs of mixed sizes (src/data/synthetic.ts) for the data
// benchmark and for trying `loco train --dataset folder`. The ImageNet layout by default:
// DIR/train/classNNN/*.jpg (N images in all, spread over K classes) and DIR/val/classNNN/*.jpg
// (--val per class, default N / K / 5); --flat writes N unlabelled images straight into DIR.
import { writeSyntheticFolder } from "../src/data";

const usage =
  "usage: node dist/bench/make-folder.js DIR [--count 20000] [--classes 10] [--val N] [--min 160] [--max 500] [--seed 0] [--flat]";

async function main(argv: string[]): Promise<void> {
  const dir = argv[0];
  if (dir === undefined || dir.startsWith("--")) throw new Error(usage);
  const o = { count: 20000, classes: 10, val: -1, min: 160, max: 500, seed: 0, flat: false };
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--flat") {
      o.flat = true;
      continue;
    }
    const key = a.replace(/^--/, "") as keyof typeof o;
    const v = Number(argv[++i]);
    if (!(key in o) || key === "flat" || !Number.isInteger(v) || v < 0) throw new Error(`bad option ${a}\n${usage}`);
    (o as Record<string, number | boolean>)[key] = v;
  }
  const classes = o.flat ? 0 : Math.max(1, o.classes);
  const perClass = o.flat ? o.count : Math.ceil(o.count / classes);
  const val = o.flat ? 0 : o.val >= 0 ? o.val : Math.max(1, Math.round(perClass / 5));
  const started = performance.now();
  const written = await writeSyntheticFolder(dir, {
    classes,
    train: perClass,
    val,
    sizes: [o.min, o.max],
    seed: o.seed,
    splits: !o.flat,
  });
  console.log(`${dir}: ${written} JPEGs written in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  console.error((error as Error).message);
  process.exitCode = 2;
});
