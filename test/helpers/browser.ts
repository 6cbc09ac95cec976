// Opens an HTML file in headless Chromium (Debian's /usr/bin/chromium through puppeteer-core) and
// reports what a reader would see: the data marks each chart drew and every error the page logged.
import * as fs from "node:fs";
import puppeteer, { type Browser } from "puppeteer-core";

export const CHROMIUM = process.env.LOCO_CHROMIUM ?? "/usr/bin/chromium";
export const chromiumAvailable = (): boolean => fs.existsSync(CHROMIUM);

export interface PageCheck {
  /** figure id → number of data marks (lines, bars, points, rules; axes and legends excluded). */
  marks: Record<string, number>;
  /** Console errors, uncaught exceptions and failed requests. */
  errors: string[];
  /** Requests the page made other than for itself (a self-contained page makes none). */
  requests: string[];
}

/** Checks each page in one browser session (starting Chromium takes seconds). */
export async function checkPages(pages: { html: string; screenshot?: string }[]): Promise<PageCheck[]> {
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const out: PageCheck[] = [];
    for (const p of pages) out.push(await checkOne(browser, p.html, p.screenshot));
    return out;
  } finally {
    await browser.close();
  }
}

async function checkOne(browser: Browser, htmlFile: string, screenshot?: string): Promise<PageCheck> {
  {
    const page = await browser.newPage();
    const errors: string[] = [];
    const requests: string[] = [];
    const url = `file://${htmlFile}`;
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`console: ${m.text()}`);
    });
    page.on("pageerror", (e) => errors.push(`exception: ${String(e)}`));
    page.on("requestfailed", (r) => errors.push(`request failed: ${r.url()}`));
    page.on("request", (r) => {
      if (r.url() !== url) requests.push(r.url());
    });
    await page.setViewport({ width: 1200, height: 900 });
    await page.goto(url, { waitUntil: "load" });
    const marks = await page.$$eval("figure.chart", (figures) =>
      Object.fromEntries(
        figures.map((f) => [
          f.id,
          f.querySelectorAll(
            "g.role-mark:not(.mark-group) > path, g.role-mark:not(.mark-group) > line, g.role-mark:not(.mark-group) > rect",
          ).length,
        ]),
      ),
    );
    if (screenshot !== undefined) await page.screenshot({ path: screenshot, fullPage: true });
    await page.close();
    return { marks, errors, requests };
  }
}
