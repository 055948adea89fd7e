// Command-line flags of the bench commands: declared once (shown by --help with defaults), parsed strictly
// (an unknown flag is an error), read as typed values whose errors name the flag. Values stay strings until
// read, so nothing is coerced behind the user's back.
import { parseArgs } from "node:util";

export interface FlagDef {
  name: string; // without the leading --
  help: string;
  value?: string; // placeholder; absent for boolean switches
  default?: string;
}

export class BenchFlagError extends Error {}

// Flags several bench commands share, declared once.
export const MODEL_FLAG: FlagDef = { name: "model", value: "dir|id", help: "Model directory or Hugging Face id (a config-only Qwen dir works with --dummy-weight)" };
export const DEVICE_FLAG: FlagDef = { name: "device", value: "cpu|cuda", help: "Backend (default: cuda when a GPU and build/libmsgl_cuda.so are usable, else cpu)" };
export const DUMMY_WEIGHT_FLAG: FlagDef = { name: "dummy-weight", help: "Random weights from config.json alone" };
/** --json and --record; `report` names what goes to stderr when --json prints the JSON line. */
export function outputFlags(report: string): FlagDef[] {
  return [
    { name: "json", help: `Print one JSON line (the ${report} goes to stderr)` },
    { name: "record", value: "file", help: "Append the JSON result to this JSON-lines file (e.g. bench/results.jsonl)" },
  ];
}

export type FlagValues = Record<string, string | boolean | undefined>;

export function helpText(command: string, summary: string, defs: FlagDef[]): string {
  const rows = defs.map((d) => [`--${d.name}${d.value ? ` <${d.value}>` : ""}`, d.help + (d.default !== undefined ? ` (default: ${d.default})` : "")]);
  const width = Math.max(...rows.map((r) => r[0].length));
  return `${command}: ${summary}\n\n${rows.map(([f, h]) => `  ${f.padEnd(width)}  ${h}`).join("\n")}\n  ${"--help".padEnd(width)}  this text\n`;
}

/** Parses argv (after the script path); prints help and exits on --help. */
export function parseFlags(argv: string[], command: string, summary: string, defs: FlagDef[]): FlagValues {
  const options: Record<string, { type: "string" | "boolean" }> = { help: { type: "boolean" } };
  for (const d of defs) options[d.name] = { type: d.value ? "string" : "boolean" };
  let values: FlagValues;
  try {
    values = parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as FlagValues;
  } catch (e) {
    throw new BenchFlagError(`${(e as Error).message}\n\n${helpText(command, summary, defs)}`);
  }
  if (values.help) {
    process.stdout.write(helpText(command, summary, defs));
    process.exit(0);
  }
  for (const d of defs) if (values[d.name] === undefined && d.default !== undefined) values[d.name] = d.default;
  return values;
}

export function str(v: FlagValues, name: string): string | undefined {
  const x = v[name];
  return typeof x === "string" ? x : undefined;
}

export function requiredStr(v: FlagValues, name: string): string {
  const x = str(v, name);
  if (x === undefined || x === "") throw new BenchFlagError(`--${name} is required`);
  return x;
}

export function int(v: FlagValues, name: string, min: number): number {
  const x = Number(str(v, name));
  if (!Number.isInteger(x) || x < min) throw new BenchFlagError(`--${name} must be an integer ≥ ${min} (got ${JSON.stringify(v[name])})`);
  return x;
}

export function optionalInt(v: FlagValues, name: string, min: number): number | undefined {
  return str(v, name) === undefined ? undefined : int(v, name, min);
}

export function num(v: FlagValues, name: string, min: number): number {
  const x = Number(str(v, name));
  if (!Number.isFinite(x) || x < min) throw new BenchFlagError(`--${name} must be a number ≥ ${min} (got ${JSON.stringify(v[name])})`);
  return x;
}

/** "MIN,MAX" (both included) or "N" (MIN = MAX = N). */
export function range(v: FlagValues, name: string, min: number): [number, number] {
  const parts = (str(v, name) ?? "").split(",").map((p) => Number(p.trim()));
  const [lo, hi] = parts.length === 1 ? [parts[0], parts[0]] : parts;
  if (parts.length > 2 || !Number.isInteger(lo) || !Number.isInteger(hi) || lo < min || hi < lo) {
    throw new BenchFlagError(`--${name} must be MIN,MAX or N with integers ${min} ≤ MIN ≤ MAX (got ${JSON.stringify(v[name])})`);
  }
  return [lo, hi];
}

/** "A,B,C" → integers ≥ min. */
export function intList(v: FlagValues, name: string, min: number): number[] {
  const parts = (str(v, name) ?? "").split(",").map((p) => Number(p.trim()));
  if (parts.length === 0 || parts.some((x) => !Number.isInteger(x) || x < min)) {
    throw new BenchFlagError(`--${name} must be a comma-separated list of integers ≥ ${min} (got ${JSON.stringify(v[name])})`);
  }
  return parts;
}

export function choice<T extends string>(v: FlagValues, name: string, options: readonly T[]): T {
  const x = str(v, name);
  if (!options.includes(x as T)) throw new BenchFlagError(`--${name} must be one of ${options.join(", ")} (got ${JSON.stringify(v[name])})`);
  return x as T;
}

export function bool(v: FlagValues, name: string): boolean {
  return v[name] === true;
}

/** Runs a bench command's main, turning flag errors and thrown errors into one clear line and exit 1. */
export function runMain(main: () => Promise<void>): void {
  main().then(() => process.exit(0), (e: unknown) => {
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  });
}
