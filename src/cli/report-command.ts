// `loco report <run or experiment dir>`: writes report.html and charts/*.svg.
import * as path from "node:path";
import { writeReport } from "../report/report";
import { type OptionSpec, UsageError } from "./options";

export const reportSpecs: OptionSpec[] = [
  {
    flag: "out",
    type: "string",
    description: "folder for report.html and charts/*.svg",
    defaultText: "the run or experiment directory",
  },
];

export async function runReport(values: Record<string, unknown>, positionals: string[]): Promise<void> {
  if (positionals.length !== 1) {
    throw new UsageError(`loco report: expected one run or experiment directory, got ${positionals.length}`);
  }
  const written = await writeReport(positionals[0], { outDir: values.out as string | undefined });
  console.log(
    `report: ${written.html} (${written.charts.length} charts: ${written.charts.join(", ")}; SVG copies in ${path.dirname(written.svgs[0] ?? written.html)})`,
  );
}
