// The self-contained report page: tables and inline SVG charts, inline CSS, no script and no
// external resource, so it opens from disk without a network.
import type { RowSummary } from "./summary";
import { formatPercent } from "./summary";

export function escapeHtml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** An SVG document made embeddable: no XML prolog, ids left as vega wrote them. */
function inlineSvg(svg: string): string {
  return svg.replace(/^<\?xml[^>]*>\s*/, "");
}

const CSS = `
body { font-family: Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.3rem; }
p.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 1rem 0; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f6f6f6; }
tr.baseline td { color: #666; font-style: italic; }
figure { margin: 1.5rem 0; overflow-x: auto; }
figcaption { color: #555; font-size: 0.85rem; max-width: 800px; }
.note { color: #666; font-size: 0.85rem; }
`;

export interface ReportPage {
  title: string;
  meta: string[];
  rows: RowSummary[];
  /** Extra columns for the table (e.g. the paper's reference figures), by row label. */
  reference?: { title: string; values: Record<string, string> };
  charts: { name: string; title: string; caption: string; svg: string }[];
  notes: string[];
}

const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);

function summaryTable(page: ReportPage): string {
  const ref = page.reference;
  const fractions = [...new Set(page.rows.flatMap((r) => r.finetune.map((f) => f.fraction)))].sort((a, b) => a - b);
  const head = [
    "run",
    "seeds",
    "linear top-1 (%)",
    "kNN top-1 (%)",
    ...fractions.map((f) => `fine-tune ${+(f * 100).toPrecision(3)}% top-1 (%)`),
    "peak memory (MiB)",
    "step time (s)",
    "images/s",
    "training (s)",
    ...(ref ? [ref.title] : []),
  ];
  const cell = (s: { mean: number } | null, f: (x: number) => string): string => (s === null ? "-" : f(s.mean));
  const body = page.rows.map((r) => {
    const cells = [
      escapeHtml(r.row),
      r.finished === 0 ? "pending" : r.kind === "baseline" ? String(r.finished) : `${r.finished}/${r.runs}`,
      formatPercent(r.linear),
      formatPercent(r.knn),
      ...fractions.map((f) => formatPercent(r.finetune.find((x) => x.fraction === f)?.top1 ?? null)),
      cell(r.peakBytes, mib),
      cell(r.stepSeconds, (x) => x.toFixed(3)),
      cell(r.imagesPerSecond, (x) => x.toFixed(0)),
      cell(r.trainSeconds, (x) => x.toFixed(0)),
      ...(ref ? [escapeHtml(ref.values[r.row] ?? "-")] : []),
    ];
    return `<tr class="${r.kind}">${cells.map((c) => `<td>${c}</td>`).join("")}</tr>`;
  });
  return `<table><thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join("")}</tr></thead><tbody>${body.join("")}</tbody></table>`;
}

export function renderPage(page: ReportPage): string {
  const figures = page.charts.map(
    (c) =>
      `<figure id="${escapeHtml(c.name)}" class="chart">${inlineSvg(c.svg)}<figcaption>${escapeHtml(c.caption)}</figcaption></figure>`,
  );
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(page.title)}</title>
<style>${CSS}</style>
</head>
<body>
<h1>${escapeHtml(page.title)}</h1>
${page.meta.map((m) => `<p class="meta">${escapeHtml(m)}</p>`).join("\n")}
<h2>Results</h2>
${summaryTable(page)}
${page.notes.map((n) => `<p class="note">${escapeHtml(n)}</p>`).join("\n")}
<h2>Charts</h2>
${figures.join("\n")}
</body>
</html>
`;
}
