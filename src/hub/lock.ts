// A lock file per blob, so that two processes resolving the same model never append to one .incomplete file.
import { readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";

const POLL_MS = 100;
/** A holder on another host (shared cache) is presumed dead once neither the lock nor its partial file changed for this long. */
const STALE_MS = 60_000;

export async function withLock<T>(lockPath: string, partPath: string, fn: () => Promise<T>): Promise<T> {
  while (!tryCreate(lockPath)) {
    if (isStale(lockPath, partPath)) rmSync(lockPath, { force: true });
    else await Bun.sleep(POLL_MS);
  }
  try {
    return await fn();
  } finally {
    rmSync(lockPath, { force: true });
  }
}

function tryCreate(lockPath: string): boolean {
  try {
    writeFileSync(lockPath, `${hostname()} ${process.pid}`, { flag: "wx" });
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw e;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function isStale(lockPath: string, partPath: string): boolean {
  let owner: string;
  let lockTime: number;
  try {
    owner = readFileSync(lockPath, "utf8");
    lockTime = statSync(lockPath).mtimeMs;
  } catch {
    return false; // released meanwhile: just try again
  }
  const [host, pid] = owner.split(" ");
  if (host === hostname() && /^\d+$/.test(pid ?? "") && !alive(Number(pid))) return true;
  return Date.now() - Math.max(lockTime, mtime(partPath)) > STALE_MS;
}

function mtime(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}
