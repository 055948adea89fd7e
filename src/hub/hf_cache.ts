// The huggingface_hub cache layout: models--ORG--NAME/{refs/REV, blobs/ETAG, snapshots/COMMIT/FILE → ../../blobs/ETAG}.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";

export const repoDir = (cacheDir: string, repo: string): string => join(cacheDir, `models--${repo.replace("/", "--")}`);

export const isCommit = (revision: string): boolean => /^[0-9a-f]{40}$/.test(revision);

/** The commit a revision points at in the cache (a commit hash points at itself), or null. */
export function cachedCommit(repo: string, revision: string): string | null {
  if (isCommit(revision)) return revision;
  const ref = join(repo, "refs", revision);
  if (!existsSync(ref)) return null;
  return readFileSync(ref, "utf8").trim() || null;
}

/**
 * What a snapshot lacks to be loaded: config.json, tokenizer.json, and the weights the loader reads
 * (model.safetensors, else every shard of model.safetensors.index.json, else any *.safetensors).
 * Symlinks must resolve; plain files (a hand-made cache) count too.
 */
export function missingFiles(snapshot: string): string[] {
  const has = (f: string): boolean => existsSync(join(snapshot, f));
  const missing = ["config.json", "tokenizer.json"].filter((f) => !has(f));
  if (has("model.safetensors")) return missing;
  if (has("model.safetensors.index.json")) {
    let shards: string[];
    try {
      shards = indexShards(join(snapshot, "model.safetensors.index.json"));
    } catch {
      return [...missing, "model.safetensors.index.json (unreadable)"];
    }
    return [...missing, ...shards.filter((f) => !has(f))];
  }
  const anyWeights = existsSync(snapshot) && readdirSync(snapshot).some((f) => f.endsWith(".safetensors") && has(f));
  return anyWeights ? missing : [...missing, "*.safetensors"];
}

/** The distinct shard files named by a model.safetensors.index.json. */
export function indexShards(indexPath: string): string[] {
  const map = (JSON.parse(readFileSync(indexPath, "utf8")) as { weight_map?: unknown } | null)?.weight_map;
  if (map === null || typeof map !== "object" || Array.isArray(map)) throw new Error(`${indexPath}: no "weight_map" object`);
  return [...new Set(Object.values(map as Record<string, unknown>).map(String))];
}

// Concurrent resolvers may link or write the same paths: build aside, then rename over (atomic).
const aside = (path: string): string => `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;

/** snapshots/COMMIT/FILE → a relative symlink to the blob, as huggingface_hub makes it. */
export function linkBlob(snapshot: string, file: string, blob: string): void {
  const link = join(snapshot, file);
  mkdirSync(dirname(link), { recursive: true });
  const tmp = aside(link);
  symlinkSync(relative(dirname(link), blob), tmp);
  renameSync(tmp, link);
}

export function writeRef(repo: string, revision: string, commit: string): void {
  const ref = join(repo, "refs", revision);
  mkdirSync(dirname(ref), { recursive: true });
  const tmp = aside(ref);
  try {
    writeFileSync(tmp, commit);
    renameSync(tmp, ref);
  } finally {
    rmSync(tmp, { force: true });
  }
}
