// The tables `npm run bench:parallel` prints without --json (bench/parallel.ts measures them).
import type { Link } from "../src/learning";
import type { Prediction } from "./parallel-predict";
import type { BenchModel } from "./parallel-model";
import type { checkCase, searchSplit } from "./parallel";
import type { Ceiling, Measured } from "./parallel-rounds";

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;

export function printTables(r: {
  model: BenchModel;
  seconds: number;
  rounds: number;
  ceiling: Ceiling;
  link: Link;
  search: Awaited<ReturnType<typeof searchSplit>>[];
  measured: Measured[];
  check: ReturnType<typeof checkCase>[];
  simulated: Prediction[];
}): void {
  const { model, ceiling } = r;
  console.log(
    `ResNet-${model.depth} width ${model.width}, ${model.size}x${model.size}, ${model.images} images/step; ` +
      `${r.rounds} round(s), figures: the rounds' medians; ${r.seconds} s`,
  );
  console.log(
    `ceiling: LoCo alone ${ceiling.aloneImagesPerSecond} img/s, two processes at once ${ceiling.concurrentImagesPerSecond.join(" + ")}: ` +
      `${ceiling.ceilingSpeedup}x at best on 2 ranks (rounds: ${ceiling.rounds.map((x) => `${x.ceilingSpeedup}x`).join(", ")}; ` +
      `contention ${ceiling.contention}x, in CPU time ${ceiling.cpuContention}x); ` +
      `link ${r.link.latencyMs} ms + ${r.link.bytesPerMs} bytes/ms`,
  );
  if (r.search.length > 0) {
    console.log("\n| method | profile's cut | cut tried | 2 ranks img/s | wait rank 0 / 1 | busy ms/step |");
    console.log("| --- | --- | --- | --- | --- | --- |");
    for (const s of r.search) {
      for (const x of s.candidates) {
        const mark = x.split[0] === s.split[0] ? " (chosen)" : "";
        console.log(
          `| ${s.name} | ${s.profiledSplit.join(",")} | ${x.split.join(",")}${mark} | ${x.imagesPerSecond} | ${x.waitShare.map(pct).join(" / ")} | ${x.busyMs.join(" / ")} |`,
        );
      }
    }
  }
  console.log(
    "\n| method | split | 2 ranks img/s | 1 rank img/s | speedup (rounds' range) | wait rank 0 | wait rank 1 | peak MiB |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const m of r.measured) {
    console.log(
      `| ${m.name} | ${m.split.join(",")} | ${m.imagesPerSecond} | ${m.oneRankImagesPerSecond} | ${m.speedup}x (${m.speedupRange.join("-")}x) | ${pct(m.waitShare[0])} | ${pct(m.waitShare[1])} | ${m.peakMiB.join(" / ")} |`,
    );
  }
  printRounds(r.measured);
  console.log(
    "\n| method | busy ms/step | simulated | forward | profiled forward | late | messages | update | busy / half the 1-rank step |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const [i, m] of r.measured.entries()) {
    const c = r.check[i];
    console.log(
      `| ${m.name} | ${m.busyMs.join(" / ")} | ${c.predictedBusyMs.join(" / ")} | ${m.forwardMs.join(" / ")} | ${c.profiledForwardMs.join(" / ")} | ` +
        `${m.lateMs.join(" / ")} | ${m.messageMs.join(" / ")} | ${m.updateMs.join(" / ")} | ${m.busyOverHalf.join(" / ")} |`,
    );
  }
  console.log("\n| method | CPU ms/step: compute thread | other threads | of which kernel | 2 ranks / 1 rank |");
  console.log("| --- | --- | --- | --- | --- |");
  for (const m of r.measured) {
    const ranks = (f: (c: Measured["oneRankCpuMs"]) => number): string =>
      `${m.cpuMs.map(f).join(" / ")} (1 rank ${f(m.oneRankCpuMs)})`;
    console.log(
      `| ${m.name} | ${ranks((c) => c.mainMs)} | ${ranks((c) => c.helperMs)} | ${ranks((c) => c.systemMs)} | ${m.cpuOverOneRank}x |`,
    );
  }
  console.log(
    "\n| method | simulated img/s | measured | error | uncorrected error | simulated speedup | measured | simulated wait |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const c of r.check) {
    console.log(
      `| ${c.name} | ${c.predictedImagesPerSecond} | ${c.measuredImagesPerSecond} | ${pct(c.error)} | ${pct(c.uncorrectedError)} | ` +
        `${c.predictedSpeedup}x | ${c.measuredSpeedup}x | ${c.predictedWaitShare.map(pct).join(" / ")} |`,
    );
  }
  console.log("\n| method | ranks | cuts | simulated speedup | largest wait |");
  console.log("| --- | --- | --- | --- | --- |");
  for (const s of r.simulated) {
    console.log(`| ${s.name} | ${s.ranks} | ${s.cuts.join(",")} | ${s.speedup}x | ${pct(Math.max(...s.waitShare))} |`);
  }
}

/** Each case's rounds: the order the pair ran in, the speedup and the wait share per rank. */
function printRounds(measured: Measured[]): void {
  console.log("\n| method | round | ran first | 2 ranks img/s | 1 rank img/s | speedup | wait rank 0 / 1 |");
  console.log("| --- | --- | --- | --- | --- | --- | --- |");
  for (const m of measured) {
    for (const [i, x] of m.rounds.entries()) {
      console.log(
        `| ${m.name} | ${i + 1} | ${x.oneRankFirst ? "1 rank" : "2 ranks"} | ${x.imagesPerSecond} | ${x.oneRankImagesPerSecond} | ` +
          `${x.speedup}x | ${x.waitShare.map(pct).join(" / ")} |`,
      );
    }
    console.log(
      `| ${m.name} | median | | ${m.imagesPerSecond} | ${m.oneRankImagesPerSecond} | ${m.speedup}x (${m.speedupRange.join("-")}x) | ` +
        `${m.waitShare.map(pct).join(" / ")} |`,
    );
  }
}
