// A native library is current when the hash of its sources (and the ABI header) equals the stamp written
// beside it at build time. Hashes, unlike mtimes, survive copying the tree to another machine.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ABI_HEADER, PROJECT_ROOT } from "./library_paths.ts";

/** Source files of one library, relative to the project root, sorted. */
export function librarySources(sourceDir: string, extension: string): string[] {
  return readdirSync(join(PROJECT_ROOT, sourceDir))
    .filter((f) => f.endsWith(extension))
    .sort()
    .map((f) => `${sourceDir}/${f}`);
}

export function sourcesHash(sourceDir: string): string {
  const hash = createHash("sha256").update(readFileSync(ABI_HEADER));
  for (const f of readdirSync(join(PROJECT_ROOT, sourceDir)).sort()) {
    hash.update(f).update(readFileSync(join(PROJECT_ROOT, sourceDir, f)));
  }
  return hash.digest("hex");
}

export const stampPath = (library: string) => `${library}.sources`;
