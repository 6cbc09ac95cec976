// metrics.jsonl: one JSON record per line, one type per record kind. The trainer appends them with
// a MetricsWriter; reports read them back with readMetrics, which checks every line.
import * as fs from "node:fs";
import type { Results } from "./results";

/** Written every 10 steps and at each epoch's last step. `loss` has one entry per loss stage (NaN: not trained). */
export interface StepRecord {
  type: "step";
  time?: string;
  step: number;
  epoch: number;
  lr: number;
  loss: number[];
  imagesPerSecond: number;
  dataWaitShare: number;
  skippedSteps: number;
}

/** Written at each epoch's end: the epoch's mean loss per loss stage and the kNN monitor (null: off). */
export interface EpochRecord {
  type: "epoch";
  time?: string;
  epoch: number;
  step: number;
  loss: number[];
  knnTop1: number | null;
  trainSeconds: number;
  dataWaitShare: number;
  skippedSteps: number;
}

/** A non-finite step dropped with onNonfinite "skip". */
export interface SkipRecord {
  type: "skip";
  time?: string;
  step: number;
  epoch: number;
  /** 1-based encoder stage. */
  stage: number;
  kind: "loss" | "gradient" | "weights" | "buffer";
  reason: string;
  skippedSteps: number;
}

/** The run continued from this checkpoint at this step. */
export interface ResumeRecord {
  type: "resume";
  time?: string;
  step: number;
  checkpoint: string;
}

/** --resume of a run that had no checkpoint yet: it started again from step 0. */
export interface RestartRecord {
  type: "restart";
  time?: string;
  step: number;
}

/** The run's results (as results.json). */
export type ResultsRecord = Results & { type: "results"; time?: string };

/**
 * Stage parallelism (docs/distributed.md): one record per rank, its time since the previous one
 * (or since the start), written by rank 0 from every rank's figures.
 */
export interface StageRankRecord {
  type: "stage-rank";
  time?: string;
  step: number;
  rank: number;
  /** 1-based encoder stages the rank holds, first and last. */
  stages: number[];
  steps: number;
  /** Seconds computing (its steps' wall time less the waits). */
  busySeconds: number;
  /** Seconds blocked on messages from the other ranks (recv, and sends not yet taken). */
  waitSeconds: number;
  imagesPerSecond: number;
  /** Most bytes the rank's counting allocator held. */
  peakBytes: number;
}

export type MetricsRecord =
  StepRecord | EpochRecord | SkipRecord | ResumeRecord | RestartRecord | ResultsRecord | StageRankRecord;
export type MetricsKind = MetricsRecord["type"];

/**
 * Appends records to a metrics file, one JSON line each, stamped with the time. Each line is one
 * append, so a crash leaves at most a torn last line (which readMetrics tolerates).
 */
export class MetricsWriter {
  constructor(readonly file: string) {}

  append(record: MetricsRecord): void {
    const { type, ...fields } = record;
    // NaN and infinities become null in JSON; readMetrics turns a null loss entry back into NaN.
    fs.appendFileSync(this.file, `${JSON.stringify({ type, time: new Date().toISOString(), ...fields })}\n`);
  }
}

type FieldCheck = "number" | "string" | "losses" | "number|null" | "object";

const FIELDS: Record<MetricsKind, Record<string, FieldCheck>> = {
  step: {
    step: "number",
    epoch: "number",
    lr: "number",
    loss: "losses",
    imagesPerSecond: "number",
    dataWaitShare: "number",
    skippedSteps: "number",
  },
  epoch: {
    epoch: "number",
    step: "number",
    loss: "losses",
    knnTop1: "number|null",
    trainSeconds: "number",
    dataWaitShare: "number",
    skippedSteps: "number",
  },
  skip: {
    step: "number",
    epoch: "number",
    stage: "number",
    kind: "string",
    reason: "string",
    skippedSteps: "number",
  },
  resume: { step: "number", checkpoint: "string" },
  "stage-rank": {
    step: "number",
    rank: "number",
    stages: "losses",
    steps: "number",
    busySeconds: "number",
    waitSeconds: "number",
    imagesPerSecond: "number",
    peakBytes: "number",
  },
  restart: { step: "number" },
  results: {
    method: "string",
    dataset: "string",
    encoder: "string",
    epochs: "number",
    training: "object",
  },
};

/** A number as JSON holds it: non-finite values were written as null. */
const isJsonNumber = (v: unknown): boolean => typeof v === "number" || v === null;

function fieldProblem(value: unknown, check: FieldCheck): string | null {
  switch (check) {
    case "number":
      return isJsonNumber(value) ? null : "a number";
    case "number|null":
      return isJsonNumber(value) ? null : "a number or null";
    case "string":
      return typeof value === "string" ? null : "a string";
    case "losses":
      return Array.isArray(value) && value.every(isJsonNumber) ? null : "an array of numbers";
    case "object":
      return value !== null && typeof value === "object" && !Array.isArray(value) ? null : "an object";
  }
}

/** Checks one parsed line; returns the record (null losses back to NaN) or throws naming the field. */
function checkRecord(value: unknown, where: string): MetricsRecord {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`${where}: expected a JSON object`);
  }
  const record = value as Record<string, unknown>;
  const type = record.type;
  if (typeof type !== "string" || !(type in FIELDS)) {
    throw new Error(
      `${where}: unknown record type ${JSON.stringify(type)} (expected one of ${Object.keys(FIELDS).join(", ")})`,
    );
  }
  for (const [field, check] of Object.entries(FIELDS[type as MetricsKind])) {
    if (!(field in record)) throw new Error(`${where}: a '${type}' record lacks the field '${field}'`);
    const problem = fieldProblem(record[field], check);
    if (problem !== null) {
      throw new Error(
        `${where}: field '${field}' of a '${type}' record: expected ${problem}, got ${JSON.stringify(record[field])}`,
      );
    }
    if (check === "losses") record[field] = (record[field] as (number | null)[]).map((v) => v ?? NaN);
    else if (check === "number" && record[field] === null) record[field] = NaN;
  }
  if (record.time !== undefined && typeof record.time !== "string") {
    throw new Error(`${where}: field 'time': expected a string`);
  }
  return record as unknown as MetricsRecord;
}

/**
 * Reads a metrics file, checking every line's record type and fields; errors name file:line. A
 * torn last line (a crash during an append) is skipped; a bad line anywhere else is an error.
 */
export function readMetrics(file: string): MetricsRecord[] {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (error) {
    throw new Error(`${file}: cannot read the metrics (${(error as Error).message})`);
  }
  const lines = text.split("\n");
  const complete = text.endsWith("\n");
  if (complete) lines.pop(); // the empty string after the final newline
  const records: MetricsRecord[] = [];
  lines.forEach((line, i) => {
    const where = `${file}:${i + 1}`;
    const last = i === lines.length - 1;
    if (line.trim() === "") {
      if (last) return;
      throw new Error(`${where}: empty line`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (error) {
      // Only the last line may be torn, and only when the file does not end with a newline.
      if (last && !complete) return;
      throw new Error(`${where}: not valid JSON (${(error as Error).message})`);
    }
    records.push(checkRecord(parsed, where));
  });
  return records;
}
