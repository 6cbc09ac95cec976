// Plain-text tables for the terminal.

/** Formats rows under a header, columns padded; numbers-like cells right-aligned. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const numeric = (s: string): boolean => /^[-+]?[\d.]+(e[-+]?\d+)?[x%]?$/.test(s);
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (numeric(c) ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join("  ")
      .trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}
