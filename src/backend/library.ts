// Opens one of our native libraries, refusing a missing, stale or ABI-mismatched build with the command to run.
import { dlopen } from "bun:ffi";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { ABI_HEADER, PROJECT_ROOT } from "./library_paths.ts";
import { MSGL_SYMBOLS, type MsglLibrary } from "./native_ops.ts";

function newestSourceMtime(sourceDir: string): number {
  let newest = existsSync(ABI_HEADER) ? statSync(ABI_HEADER).mtimeMs : 0;
  const dir = join(PROJECT_ROOT, sourceDir);
  if (!existsSync(dir)) return newest;
  for (const f of readdirSync(dir)) newest = Math.max(newest, statSync(join(dir, f)).mtimeMs);
  return newest;
}

function headerAbiVersion(): number | null {
  if (!existsSync(ABI_HEADER)) return null;
  const m = /#define MSGL_ABI_VERSION (\d+)/.exec(readFileSync(ABI_HEADER, "utf8"));
  return m ? Number(m[1]) : null;
}

export function openMsglLibrary(path: string, sourceDir: string): MsglLibrary {
  const fix = "run `bun run build` (it also runs on `bun install`)";
  if (!existsSync(path)) throw new Error(`native library ${path} not found: ${fix}`);
  if (statSync(path).mtimeMs < newestSourceMtime(sourceDir)) {
    throw new Error(`native library ${path} is older than its sources in ${sourceDir}/: ${fix}`);
  }
  const lib = dlopen(path, MSGL_SYMBOLS).symbols;
  const expected = headerAbiVersion();
  const actual = lib.msgl_abi_version();
  if (expected !== null && actual !== expected) {
    throw new Error(`native library ${path} has ABI ${actual} but cuda/include/msgl.h says ${expected}: ${fix}`);
  }
  return lib;
}
