// What every bench result carries (when, on what, the command that reproduces it) and how it is kept:
// `--record FILE` appends the result as one JSON line, so rows from a GPU run are added to
// bench/results.jsonl with a plain `cat >>`; bench:charts reads that file.
import { appendFileSync } from "node:fs";
import { loadavg } from "node:os";
import { relative } from "node:path";

export const RESULTS_FILE = new URL("./results.jsonl", import.meta.url).pathname;

export interface RecordHead {
  bench: "offline" | "serving" | "latency" | "kernels";
  engine: string; // "minisgl", or the baseline's name
  date: string; // YYYY-MM-DD (UTC)
  hardware: string; // GPU name from nvidia-smi, or "cpu: <model> (<n> cores)"
  device: "cpu" | "cuda";
  command: string;
  /** The machine's 1-minute load average when the result was taken: other work on a shared machine
   * (builds, other benchmarks) slows CPU results, so CPU rows carry it. */
  load_avg_1m: number;
}

/** The command line that reproduces this run, with the environment variables that change what it measures. */
export function commandLine(script: string, argv: string[] = process.argv.slice(2)): string {
  const env = process.env.MINISGL_DISABLE_OVERLAP_SCHEDULING === "1" ? "MINISGL_DISABLE_OVERLAP_SCHEDULING=1 " : "";
  const quoted = argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`));
  return `${env}bun run ${script}${quoted.length ? ` ${quoted.join(" ")}` : ""}`.replace(/ --record \S+/, "");
}

export function recordHead(bench: RecordHead["bench"], device: RecordHead["device"], hardware: string, script: string): RecordHead {
  return {
    bench, engine: "minisgl", date: new Date().toISOString().slice(0, 10), hardware, device, command: commandLine(script),
    load_avg_1m: Number(loadavg()[0].toFixed(2)),
  };
}

/** Appends one result as a JSON line. */
export function appendRecord(path: string, row: object): void {
  appendFileSync(path, `${JSON.stringify(row)}\n`);
  console.error(`recorded in ${relative(process.cwd(), path) || path}`);
}

/** Whether MINISGL_DISABLE_OVERLAP_SCHEDULING leaves overlap scheduling on (the engine's own rule). */
export function overlapEnabled(): boolean {
  return process.env.MINISGL_DISABLE_OVERLAP_SCHEDULING !== "1";
}
