// Opens one of our native libraries, refusing a missing, stale or ABI-mismatched build with the command to run.
import { dlopen } from "bun:ffi";
import { existsSync, readFileSync } from "node:fs";
import { ABI_HEADER } from "./library_paths.ts";
import { sourcesHash, stampPath } from "./library_stamp.ts";
import { MSGL_SYMBOLS, type MsglLibrary } from "./native_ops.ts";

function headerAbiVersion(): number | null {
  if (!existsSync(ABI_HEADER)) return null;
  const m = /#define MSGL_ABI_VERSION (\d+)/.exec(readFileSync(ABI_HEADER, "utf8"));
  return m ? Number(m[1]) : null;
}

export function openMsglLibrary(path: string, sourceDir: string): MsglLibrary {
  const fix = "run `bun run build` (it also runs on `bun install`)";
  if (!existsSync(path)) throw new Error(`native library ${path} not found: ${fix}`);
  const stamp = existsSync(stampPath(path)) ? readFileSync(stampPath(path), "utf8") : "";
  if (stamp !== sourcesHash(sourceDir)) {
    throw new Error(`native library ${path} was built from other sources than those in ${sourceDir}/: ${fix}`);
  }
  const lib = dlopen(path, MSGL_SYMBOLS).symbols;
  const expected = headerAbiVersion();
  const actual = lib.msgl_abi_version();
  if (expected !== null && actual !== expected) {
    throw new Error(`native library ${path} has ABI ${actual} but cuda/include/msgl.h says ${expected}: ${fix}`);
  }
  return lib;
}
