// Command-line options described once as a schema: the same spec parses flags, validates config
// files (JSON or YAML), and prints --help with every option's default.
import * as fs from "node:fs";
import * as path from "node:path";
import YAML from "yaml";

export type OptionType = "string" | "int" | "number" | "boolean" | "enum" | "int-list" | "number-list";

export interface OptionSpec {
  /** Flag name without dashes, kebab-case (--batch-size). The config field is its camelCase form. */
  flag: string;
  type: OptionType;
  description: string;
  default?: unknown;
  choices?: readonly string[];
  min?: number;
  max?: number;
  /** Shown in --help instead of the default when the default depends on other options. */
  defaultText?: string;
}

/** Words a boolean flag accepts as its value, also as a separate argument (`--per-stage false`). */
const BOOLEAN_WORDS = new Set(["true", "false", "yes", "no", "1", "0"]);

export class UsageError extends Error {
  override name = "UsageError";
}

/**
 * Runs a library call that checks user input and rethrows its usage mistakes ("field: …",
 * exit status 2) as UsageErrors naming the flag ("--field-name: …").
 */
export function withFlagNames<T>(fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    const e = error as { userFacing?: boolean; exitCode?: number; message: string };
    const m = e.userFacing === true && e.exitCode === 2 ? /^([a-z][A-Za-z0-9]*): ([\s\S]*)$/.exec(e.message) : null;
    if (m === null) throw error;
    throw new UsageError(`--${m[1].replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}: ${m[2]}`);
  }
}

export const camelCase = (flag: string): string => flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());

function describeValue(v: unknown): string {
  return typeof v === "string" ? `'${v}'` : JSON.stringify(v);
}

/** Converts and checks one value (from a flag string or a config field) against its spec. */
export function coerceValue(spec: OptionSpec, raw: unknown, where: string): unknown {
  const fail = (expected: string): never => {
    throw new UsageError(`${where}: expected ${expected}, got ${describeValue(raw)}`);
  };
  const range = (): string =>
    spec.min !== undefined && spec.max !== undefined
      ? ` in [${spec.min}, ${spec.max}]`
      : spec.min !== undefined
        ? ` >= ${spec.min}`
        : spec.max !== undefined
          ? ` <= ${spec.max}`
          : "";
  const checkRange = (n: number, what: string): number => {
    if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) fail(`${what}${range()}`);
    return n;
  };
  const toNumber = (v: unknown, integer: boolean): number => {
    const what = integer ? "an integer" : "a number";
    let n: number;
    if (typeof v === "number") n = v;
    else if (typeof v === "string" && v.trim() !== "" && !Number.isNaN(Number(v))) n = Number(v);
    else return fail(`${what}${range()}`);
    if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) fail(`${what}${range()}`);
    return checkRange(n, what);
  };
  switch (spec.type) {
    case "string":
      if (typeof raw !== "string" || raw === "") fail("a non-empty string");
      return raw;
    case "int":
      return toNumber(raw, true);
    case "number":
      return toNumber(raw, false);
    case "boolean":
      if (typeof raw === "boolean") return raw;
      if (raw === "true" || raw === "1" || raw === "yes") return true;
      if (raw === "false" || raw === "0" || raw === "no") return false;
      return fail("true or false");
    case "enum":
      if (typeof raw !== "string" || !spec.choices?.includes(raw)) fail(`one of ${spec.choices?.join(", ")}`);
      return raw;
    case "int-list":
    case "number-list": {
      const integer = spec.type === "int-list";
      const items =
        typeof raw === "string"
          ? raw.split(",").map((s) => s.trim())
          : Array.isArray(raw)
            ? raw
            : typeof raw === "number"
              ? [raw]
              : null;
      if (items === null || items.length === 0)
        return fail(`a comma-separated list of ${integer ? "integers" : "numbers"}`);
      return items.map((item) => toNumber(item, integer));
    }
  }
}

export interface ParsedArgs {
  values: Record<string, unknown>;
  positionals: string[];
  /** Config fields and flags the user gave explicitly (camelCase), for "was this set?" checks. */
  given: Set<string>;
  help: boolean;
}

/** Reads a config file (JSON, or YAML for .yaml/.yml) as a plain object. */
export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (error) {
    throw new UsageError(`${file}: cannot read config file (${(error as Error).message})`);
  }
  let parsed: unknown;
  try {
    parsed = /\.ya?ml$/i.test(file) ? YAML.parse(text) : JSON.parse(text);
  } catch (error) {
    throw new UsageError(
      `${file}: not valid ${/\.ya?ml$/i.test(file) ? "YAML" : "JSON"} (${(error as Error).message})`,
    );
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new UsageError(`${file}: a config file must hold an object of fields`);
  }
  return parsed as Record<string, unknown>;
}

/**
 * Parses argv against the specs. Precedence: defaults < config file (--config) < flags. Unknown
 * flags and config fields, and ill-typed values, are errors naming the flag or field.
 */
export function parseArgs(
  argv: readonly string[],
  specs: readonly OptionSpec[],
  command: string,
  options: { ignoreConfigFields?: readonly string[] } = {},
): ParsedArgs {
  const byFlag = new Map(specs.map((s) => [s.flag, s]));
  const byField = new Map(specs.map((s) => [camelCase(s.flag), s]));
  const fromFlags: Record<string, unknown> = {};
  const positionals: string[] = [];
  let configFile: string | undefined;
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--help" || arg === "-h") {
      help = true;
      continue;
    }
    if (!arg.startsWith("--")) {
      positionals.push(arg);
      continue;
    }
    let name = arg.slice(2);
    let value: string | undefined;
    const eq = name.indexOf("=");
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    if (name === "config") {
      configFile = value ?? argv[++i];
      if (configFile === undefined) throw new UsageError(`--config: expected a file path`);
      continue;
    }
    let spec = byFlag.get(name);
    if (spec === undefined && name.startsWith("no-") && byFlag.get(name.slice(3))?.type === "boolean") {
      spec = byFlag.get(name.slice(3))!;
      if (value !== undefined) throw new UsageError(`--${name} takes no value`);
      fromFlags[camelCase(spec.flag)] = false;
      continue;
    }
    if (spec === undefined) {
      throw new UsageError(`unknown option --${name} for \`loco ${command}\` (see \`loco ${command} --help\`)`);
    }
    if (value === undefined) {
      // `--flag` alone means true; `--flag false` (or true/yes/no/1/0) sets it explicitly, so that
      // the word never becomes a stray positional argument while the option silently stays true.
      if (spec.type === "boolean") value = BOOLEAN_WORDS.has(argv[i + 1] ?? "") ? argv[++i] : "true";
      else {
        value = argv[++i];
        if (value === undefined) throw new UsageError(`--${spec.flag}: expected a value`);
      }
    }
    fromFlags[camelCase(spec.flag)] = coerceValue(spec, value, `--${spec.flag}`);
  }
  const values: Record<string, unknown> = {};
  for (const s of specs) if (s.default !== undefined) values[camelCase(s.flag)] = s.default;
  const given = new Set<string>();
  if (configFile !== undefined) {
    const config = readConfigFile(configFile);
    for (const [field, raw] of Object.entries(config)) {
      if (options.ignoreConfigFields?.includes(field)) continue;
      const key = field.includes("-") ? camelCase(field) : field;
      const spec = byField.get(key);
      if (spec === undefined) {
        throw new UsageError(`${path.basename(configFile)}: unknown field '${field}' for \`loco ${command}\``);
      }
      values[key] = coerceValue(spec, raw, `${path.basename(configFile)}: field '${field}'`);
      given.add(key);
    }
  }
  for (const [key, v] of Object.entries(fromFlags)) {
    values[key] = v;
    given.add(key);
  }
  return { values, positionals, given, help };
}

/** --help text: usage, summary, then every option with its type and default. */
export function formatHelp(command: string, summary: string, specs: readonly OptionSpec[], usage?: string): string {
  const lines = [`Usage: ${usage ?? `loco ${command} [options]`}`, "", summary, "", "Options:"];
  const rows = specs.map((s) => {
    const placeholder =
      s.type === "boolean"
        ? ""
        : s.type === "enum"
          ? ` <${s.choices?.join("|")}>`
          : ` <${s.type === "int-list" ? "n,n,…" : s.type}>`;
    const def =
      s.defaultText ??
      (s.default === undefined ? "none" : Array.isArray(s.default) ? s.default.join(",") : String(s.default));
    return [`  --${s.flag}${placeholder}`, `${s.description} (default: ${def})`];
  });
  rows.push(["  --config <file>", "read options from a JSON or YAML file of camelCase fields; flags override it"]);
  rows.push(["  -h, --help", "show this help"]);
  const width = Math.min(44, Math.max(...rows.map((r) => r[0].length)) + 2);
  for (const [left, right] of rows) {
    lines.push(left.length >= width ? `${left}\n${" ".repeat(width)}${right}` : left.padEnd(width) + right);
  }
  return lines.join("\n");
}
