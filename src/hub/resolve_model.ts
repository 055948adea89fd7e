// Model id → local directory: a local directory as is, else ORG/NAME from the Hugging Face cache,
// downloading what the engine needs when it is missing.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { downloadBlob, type DownloadProgress } from "./download.ts";
import { cachedCommit, indexShards, linkBlob, missingFiles, repoDir, writeRef } from "./hf_cache.ts";
import { authHeaders, fetchFileMeta, fetchRepoInfo, HubError, hubEnv, resolveUrl, type Env, type HubEnv } from "./hub_api.ts";
import { withLock } from "./lock.ts";

export type { DownloadProgress } from "./download.ts";
export { HubError } from "./hub_api.ts";

export interface ResolveOptions {
  revision?: string;
  onProgress?: (p: DownloadProgress) => void;
  env?: Env;
}

/** Downloaded when the repo has them; weights are chosen separately (see pickWeights). */
const SMALL_FILES = [
  "config.json",
  "generation_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "chat_template.jinja",
  "special_tokens_map.json",
  "model.safetensors.index.json",
];

// huggingface_hub's repo id rules: word characters, '-' and '.', word characters at both ends, no '--' or '..'.
const PART = String.raw`[A-Za-z0-9_](?:[\w.-]*[A-Za-z0-9_])?`;
const HUB_ID = new RegExp(`^${PART}/${PART}$`);

export async function resolveModel(id: string, o: ResolveOptions = {}): Promise<string> {
  const env = o.env ?? process.env;
  const local = localDirectory(id, env);
  if (local !== null) return local;

  const revision = o.revision ?? "main";
  if (!/^[\w.-]+(?:\/[\w.-]+)*$/.test(revision) || revision.split("/").includes("..")) {
    throw new HubError(`invalid revision ${JSON.stringify(revision)} for ${id}`);
  }
  const hub = hubEnv(env);
  const repo = repoDir(hub.cacheDir, id);
  const commit = cachedCommit(repo, revision);
  const snapshot = commit === null ? null : join(repo, "snapshots", commit);
  const missing = snapshot === null ? null : missingFiles(snapshot);
  if (snapshot !== null && missing!.length === 0) return snapshot;

  if (hub.offline) {
    const state =
      snapshot === null
        ? `is not in the Hugging Face cache (${repo}, revision ${revision})`
        : `is only partly in the Hugging Face cache (${snapshot} lacks ${missing!.join(", ")})`;
    throw new HubError(`${id} ${state} and offline mode is on (HF_HUB_OFFLINE=1); run once without HF_HUB_OFFLINE to download it`);
  }
  return download(id, revision, hub, repo, o.onProgress);
}

/** The absolute directory for a local model, null for a hub id; throws for anything else. */
function localDirectory(id: string, env: Env): string | null {
  const path = id === "~" || id.startsWith("~/") ? join(env.HOME || homedir(), id.slice(1)) : id;
  if (existsSync(path)) {
    if (statSync(path).isDirectory()) return resolve(path);
    throw new HubError(`${resolve(path)} is a file, not a model directory`);
  }
  const looksLocal = /^[./~\\]/.test(id) || id.endsWith("/") || id.includes("\\") || id.split("/").length > 2;
  if (looksLocal) throw new HubError(`model directory ${resolve(path)} does not exist`);
  if (!HUB_ID.test(id) || id.includes("--") || id.includes("..") || id.length > 96) {
    throw new HubError(`${JSON.stringify(id)} is neither an existing local directory nor a Hugging Face model id (ORG/NAME)`);
  }
  return null;
}

async function download(
  id: string,
  revision: string,
  hub: HubEnv,
  repo: string,
  onProgress?: (p: DownloadProgress) => void,
): Promise<string> {
  const info = await fetchRepoInfo(hub, id, revision);
  const root = new Set(info.files.filter((f) => !f.includes("/")));
  if (!root.has("config.json")) throw new HubError(`${id} (revision ${revision}) has no config.json: not a transformers model`);
  const snapshot = join(repo, "snapshots", info.sha);
  mkdirSync(join(repo, "blobs"), { recursive: true });

  // file → its new blob; files already in the snapshot are neither fetched nor relinked
  const fetched = new Map<string, string>();
  const fetchOne = async (file: string): Promise<void> => {
    if (existsSync(join(snapshot, file))) return;
    fetched.set(file, await fetchBlob(id, info.sha, file, hub, repo, onProgress));
  };
  for (const f of SMALL_FILES) if (root.has(f)) await fetchOne(f);
  const index = root.has("model.safetensors.index.json")
    ? (fetched.get("model.safetensors.index.json") ?? join(snapshot, "model.safetensors.index.json"))
    : undefined;
  for (const f of pickWeights(id, root, index)) await fetchOne(f);

  // Link config.json last: a snapshot we wrote that has config.json and its weights is complete.
  const order = [...fetched.keys()].sort((a, b) => Number(a === "config.json") - Number(b === "config.json"));
  for (const file of order) linkBlob(snapshot, file, fetched.get(file)!);
  if (revision !== info.sha) writeRef(repo, revision, info.sha);
  return snapshot;
}

/** The weights our loader reads: model.safetensors, else the index's shards, else every *.safetensors (all at the repo root). */
function pickWeights(id: string, root: Set<string>, index: string | undefined): string[] {
  if (root.has("model.safetensors")) return ["model.safetensors"];
  if (index !== undefined) {
    let shards: string[];
    try {
      shards = indexShards(index);
    } catch (e) {
      throw new HubError(`${id}: unreadable model.safetensors.index.json (${(e as Error).message})`);
    }
    const absent = shards.filter((s) => !root.has(s));
    if (absent.length > 0) throw new HubError(`${id}: model.safetensors.index.json names files the repo lacks: ${absent.join(", ")}`);
    return shards;
  }
  const all = [...root].filter((f) => f.endsWith(".safetensors")).sort();
  if (all.length === 0) throw new HubError(`${id} has no *.safetensors weights (only safetensors checkpoints can be loaded)`);
  return all;
}

/** The blob holding `file` of commit `sha`, downloaded unless the blob store has it. */
async function fetchBlob(
  id: string,
  sha: string,
  file: string,
  hub: HubEnv,
  repo: string,
  onProgress?: (p: DownloadProgress) => void,
): Promise<string> {
  const meta = await fetchFileMeta(hub, id, sha, file);
  const blob = join(repo, "blobs", blobName(meta.etag, `${sha}/${file}`));
  if (existsSync(blob)) return blob;
  const part = `${blob}.incomplete`;
  await withLock(`${blob}.lock`, part, async () => {
    if (existsSync(blob)) return; // another process finished it while we waited
    const url = resolveUrl(hub, id, sha, file);
    await downloadBlob({ url, file, dest: blob, headers: authHeaders(hub), expectedSize: meta.size, hub, onProgress });
  });
  return blob;
}

// Blobs are named by their etag (as huggingface_hub does, so caches are shared); a server that sends
// none, or an odd one, gets a stable name derived from commit and path, so a partial file still resumes.
function blobName(etag: string | null, key: string): string {
  if (etag !== null && /^[\w.-]{1,128}$/.test(etag) && !/^\.+$/.test(etag)) return etag;
  return createHash("sha256").update(key).digest("hex");
}
