// Progress for humans: one redrawn line on a terminal, one line per finished file elsewhere (logs, CI).
// progressLine draws the line; the bench commands reuse it.
import type { DownloadProgress } from "./download.ts";

export interface ProgressStream {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

const REDRAW_MS = 100;
const BAR = 20;
const mb = (bytes: number): string => (bytes / 1e6).toFixed(1);

export function progressPrinter(stream: ProgressStream = process.stderr): (p: DownloadProgress) => void {
  let file = "";
  let t0 = 0;
  let startBytes = 0; // a resumed file starts past 0; speed counts only this run's bytes
  let lastDraw = -Infinity; // the first line always draws, however early in the process
  return (p) => {
    const now = performance.now();
    if (p.file !== file) {
      file = p.file;
      t0 = now;
      startBytes = p.bytes;
      lastDraw = -Infinity;
    }
    const secs = (now - t0) / 1000;
    const speed = secs > 0 ? `${mb((p.bytes - startBytes) / secs)} MB/s` : "";
    const size = p.total === null ? `${mb(p.bytes)} MB` : `${mb(p.bytes)}/${mb(p.total)} MB`;
    if (p.done) file = "";

    if (!stream.isTTY) {
      if (p.done) stream.write(`downloaded ${p.file} (${mb(p.bytes)} MB in ${secs.toFixed(1)} s)\n`);
      return;
    }
    if (!p.done && now - lastDraw < REDRAW_MS) return;
    lastDraw = now;
    const frac = p.total ? Math.min(1, p.bytes / p.total) : null;
    stream.write(progressLine(p.file, frac, `${size}${speed ? `  ${speed}` : ""}`, stream.columns, p.done));
  };
}

/** One redrawn terminal line: "label [####......] detail", the label shortened from the left to fit. */
export function progressLine(label: string, frac: number | null, detail: string, columns = 80, last = false): string {
  const bar = frac === null ? "" : `[${"#".repeat(Math.round(Math.min(1, frac) * BAR)).padEnd(BAR, ".")}] `;
  const tail = ` ${bar}${detail}`;
  const width = columns - 1;
  const name = label.length + tail.length > width ? `…${label.slice(-Math.max(8, width - tail.length - 1))}` : label;
  return `\r\x1b[2K${name}${tail}${last ? "\n" : ""}`;
}
