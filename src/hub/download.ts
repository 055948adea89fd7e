// One resumable file download: `${dest}.incomplete` grows (Range requests after an interruption),
// is checked against the expected size, and is renamed to `dest` when complete.
import { existsSync, renameSync, rmSync, statSync } from "node:fs";
import { open } from "node:fs/promises";
import { HubError, httpError, type HubEnv } from "./hub_api.ts";

export interface DownloadProgress {
  file: string;
  bytes: number;
  total: number | null;
  done: boolean;
}

export interface BlobDownload {
  url: string;
  /** The name reported in progress and errors. */
  file: string;
  dest: string;
  headers: Record<string, string>;
  expectedSize: number | null;
  hub: HubEnv;
  onProgress?: (p: DownloadProgress) => void;
}

/** Consecutive attempts that receive nothing before giving up; an attempt that made progress resets it. */
const MAX_FAILURES = 5;
const BACKOFF_MS = 500;

/** A dropped connection, a stall, a short body or a 5xx: worth another (resumed) attempt. */
class Transient extends Error {}

const sizeOf = (path: string): number => (existsSync(path) ? statSync(path).size : 0);

export async function downloadBlob(d: BlobDownload): Promise<void> {
  const part = `${d.dest}.incomplete`;
  let failures = 0;
  for (;;) {
    const got = { bytes: 0 };
    try {
      await attempt(d, part, got);
      break;
    } catch (e) {
      if (!(e instanceof Transient)) throw e;
      failures = got.bytes > 0 ? 0 : failures + 1;
      if (failures >= MAX_FAILURES) {
        throw new HubError(`downloading ${d.file} failed ${failures} times in a row (${e.message}); run again to resume`);
      }
      if (failures > 0) await Bun.sleep(BACKOFF_MS * 2 ** (failures - 1));
    }
  }
  renameSync(part, d.dest);
}

function contentRange(v: string | null): { start: number; total: number | null } | null {
  const m = /^bytes (?:(\d+)-\d+|\*)\/(\d+|\*)$/.exec(v?.trim() ?? "");
  if (!m) return null;
  return { start: m[1] === undefined ? -1 : Number(m[1]), total: m[2] === "*" ? null : Number(m[2]) };
}

function contentLength(res: Response): number | null {
  const v = res.headers.get("content-length");
  // A compressed body is decoded by fetch, so its Content-Length says nothing about the bytes we write.
  if (v === null || !/^\d+$/.test(v) || res.headers.get("content-encoding")) return null;
  return Number(v);
}

async function attempt(d: BlobDownload, part: string, got: { bytes: number }): Promise<void> {
  const done = (bytes: number): void => d.onProgress?.({ file: d.file, bytes, total: bytes, done: true });
  let offset = sizeOf(part);
  // A previous run received every byte but stopped before the rename.
  if (offset > 0 && offset === d.expectedSize) return done(offset);
  if (d.expectedSize !== null && offset > d.expectedSize) {
    rmSync(part);
    offset = 0;
  }
  const headers: Record<string, string> = { ...d.headers, "accept-encoding": "identity" };
  if (offset > 0) headers.range = `bytes=${offset}-`;

  const abort = new AbortController();
  let stalled = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const arm = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      stalled = true;
      abort.abort();
    }, d.hub.idleTimeoutMs);
  };
  const transient = (e: unknown): Transient =>
    new Transient(stalled ? `no data for ${d.hub.idleTimeoutMs / 1000} s` : String((e as Error)?.message ?? e));

  arm();
  try {
    let res: Response;
    try {
      res = await fetch(d.url, { headers, signal: abort.signal });
    } catch (e) {
      throw transient(e);
    }
    if (res.status === 416 && offset > 0) {
      // Nothing left past `offset`: complete if that is the whole file, else start over.
      if (offset === (contentRange(res.headers.get("content-range"))?.total ?? d.expectedSize)) return done(offset);
      rmSync(part);
      throw new Transient("the server refused to resume; starting over");
    }
    if (res.status >= 500 || res.status === 429) throw new Transient(`HTTP ${res.status}`);
    if (!res.ok) throw await httpError(res, d.file, d.hub);

    let start = 0;
    let total = contentLength(res);
    if (res.status === 206) {
      const cr = contentRange(res.headers.get("content-range"));
      if (!cr || cr.start !== offset) {
        rmSync(part, { force: true });
        throw new Transient(`unexpected Content-Range ${res.headers.get("content-range")}; starting over`);
      }
      start = offset;
      total = cr.total ?? (total === null ? null : offset + total);
    }
    // A 200 to a Range request: the server ignored it, so the body is the whole file ("w" truncates).
    total ??= d.expectedSize;
    if (total !== null && d.expectedSize !== null && total !== d.expectedSize) {
      throw new HubError(`${d.file}: the server sends ${total} bytes but announced ${d.expectedSize}`);
    }

    const fh = await open(part, start === 0 ? "w" : "a");
    let bytes = start;
    d.onProgress?.({ file: d.file, bytes, total, done: false });
    try {
      const reader = res.body!.getReader();
      for (;;) {
        let chunk: Awaited<ReturnType<typeof reader.read>>;
        try {
          chunk = await reader.read();
        } catch (e) {
          throw transient(e);
        }
        if (chunk.done) break;
        arm();
        for (let off = 0; off < chunk.value.length; ) {
          off += (await fh.write(chunk.value, off)).bytesWritten;
        }
        bytes += chunk.value.length;
        got.bytes += chunk.value.length;
        d.onProgress?.({ file: d.file, bytes, total, done: false });
      }
    } finally {
      await fh.close();
    }
    if (total !== null && bytes < total) throw new Transient(`connection closed after ${bytes} of ${total} bytes`);
    if (total !== null && bytes > total) {
      rmSync(part);
      throw new HubError(`${d.file}: received ${bytes} bytes, more than the ${total} announced`);
    }
    d.onProgress?.({ file: d.file, bytes, total, done: true });
  } finally {
    clearTimeout(timer);
  }
}
