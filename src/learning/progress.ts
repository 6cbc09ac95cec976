// A progress line for long work: step, loss, images/s, data-wait share, ETA. On a terminal it is
// redrawn in place; otherwise (logs, CI) a line is printed every `intervalSeconds`.

export interface ProgressFields {
  epoch: number;
  epochs: number;
  step: number;
  steps: number;
  /** Loss per trained stage (NaN entries are skipped). */
  losses: number[];
  imagesPerSecond: number;
  /** Share of step time spent waiting for data, in [0, 1]. */
  dataWait: number;
  etaSeconds: number;
  extra?: string;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

export function formatProgress(f: ProgressFields): string {
  const width = 20;
  const done = Math.min(width, Math.round((f.step / Math.max(1, f.steps)) * width));
  const bar = `[${"#".repeat(done)}${".".repeat(width - done)}]`;
  const losses = f.losses
    .map((l, i) => (Number.isFinite(l) ? (f.losses.length > 1 ? `s${i + 1} ${l.toFixed(3)}` : l.toFixed(4)) : null))
    .filter((s) => s !== null)
    .join(" ");
  return (
    `epoch ${f.epoch}/${f.epochs} ${bar} step ${f.step}/${f.steps}  loss ${losses}  ` +
    `${f.imagesPerSecond.toFixed(0)} img/s  data-wait ${(f.dataWait * 100).toFixed(0)}%  ETA ${formatDuration(f.etaSeconds)}` +
    (f.extra ? `  ${f.extra}` : "")
  );
}

export class Progress {
  readonly #stream: NodeJS.WriteStream;
  readonly #interactive: boolean;
  readonly #intervalMs: number;
  #lastPrint = 0;
  #dirty = false;

  constructor(
    stream: NodeJS.WriteStream = process.stderr,
    options: { intervalSeconds?: number; interactive?: boolean } = {},
  ) {
    this.#stream = stream;
    this.#interactive = options.interactive ?? Boolean(stream.isTTY);
    this.#intervalMs = (options.intervalSeconds ?? (this.#interactive ? 0.2 : 10)) * 1000;
  }

  update(fields: ProgressFields, force = false): void {
    const now = Date.now();
    if (!force && now - this.#lastPrint < this.#intervalMs) return;
    this.#lastPrint = now;
    const line = formatProgress(fields);
    if (this.#interactive) {
      this.#stream.write(`\r\x1b[2K${line}`);
      this.#dirty = true;
    } else {
      this.#stream.write(`${line}\n`);
    }
  }

  /** Prints a message on its own line (ending any in-place progress line first). */
  log(message: string): void {
    this.end();
    this.#stream.write(`${message}\n`);
  }

  end(): void {
    if (this.#dirty) {
      this.#stream.write("\n");
      this.#dirty = false;
    }
  }
}
