// The Hugging Face hub over HTTP: environment, the revision API, file metadata (HEAD) and error messages.
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";

export class HubError extends Error {
  override name = "HubError";
}

export type Env = Record<string, string | undefined>;

export interface HubEnv {
  endpoint: string;
  token: string | null;
  offline: boolean;
  /** The hub cache directory (holds models--ORG--NAME/). */
  cacheDir: string;
  metadataTimeoutMs: number;
  /** A download fails over (and resumes) when no bytes arrive for this long. */
  idleTimeoutMs: number;
}

const truthy = (v: string | undefined): boolean => ["1", "true", "yes", "on"].includes((v ?? "").trim().toLowerCase());

function seconds(v: string | undefined, dflt: number): number {
  const n = Number(v);
  return (v !== undefined && v.trim() !== "" && Number.isFinite(n) && n > 0 ? n : dflt) * 1000;
}

/** The same variables, defaults and precedence as huggingface_hub. */
export function hubEnv(env: Env): HubEnv {
  const home = env.HOME || homedir();
  const hfHome = resolve(env.HF_HOME || join(env.XDG_CACHE_HOME || join(home, ".cache"), "huggingface"));
  const cacheDir = resolve(env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE || join(hfHome, "hub"));
  return {
    endpoint: (env.HF_ENDPOINT || "https://huggingface.co").replace(/\/+$/, ""),
    token: readToken(env, hfHome),
    offline: truthy(env.HF_HUB_OFFLINE),
    cacheDir,
    metadataTimeoutMs: seconds(env.HF_HUB_ETAG_TIMEOUT, 10),
    idleTimeoutMs: seconds(env.HF_HUB_DOWNLOAD_TIMEOUT, 10),
  };
}

// `huggingface-cli login` stores the token in $HF_HOME/token; HF_TOKEN wins over it.
function readToken(env: Env, hfHome: string): string | null {
  const fromEnv = env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN;
  if (fromEnv) return fromEnv.trim();
  const file = env.HF_TOKEN_PATH || join(hfHome, "token");
  if (!existsSync(file)) return null;
  return readFileSync(file, "utf8").trim() || null;
}

export function authHeaders(h: HubEnv): Record<string, string> {
  return h.token ? { authorization: `Bearer ${h.token}` } : {};
}

export function resolveUrl(h: HubEnv, repo: string, sha: string, file: string): string {
  return `${h.endpoint}/${repo}/resolve/${encodeURIComponent(sha)}/${file.split("/").map(encodeURIComponent).join("/")}`;
}

/** A clear error for a failed hub response; `what` names the model (and file). */
export async function httpError(res: Response, what: string, h: HubEnv): Promise<HubError> {
  const code = res.headers.get("x-error-code");
  let detail = res.headers.get("x-error-message") ?? "";
  if (!detail) {
    const body = await res.text().catch(() => "");
    try {
      const e = (JSON.parse(body) as { error?: unknown }).error;
      if (typeof e === "string") detail = e;
    } catch {
      detail = body.slice(0, 200);
    }
  }
  const suffix = detail ? ` (server said: ${detail.trim()})` : "";
  const where = `${h.endpoint} answered ${res.status} for ${what}`;
  if (code === "RevisionNotFound") return new HubError(`revision not found: ${where}${suffix}`);
  if (code === "EntryNotFound") return new HubError(`file not found: ${where}${suffix}`);
  if (res.status === 401 || res.status === 403) {
    const hint = h.token
      ? "HF_TOKEN is set but was refused: check that the token is valid and that its account was granted access to this gated/private model"
      : "the model may be gated or private (or not exist): set HF_TOKEN to a token with access (https://huggingface.co/settings/tokens), or run `huggingface-cli login`";
    return new HubError(`${where}${suffix}; ${hint}`);
  }
  if (res.status === 404) return new HubError(`not found: ${where}${suffix}; check the model id`);
  return new HubError(`${where}${suffix}`);
}

function networkError(e: unknown, what: string, h: HubEnv): HubError {
  const why = e instanceof Error && e.name === "TimeoutError" ? "timed out" : String((e as Error)?.message ?? e);
  return new HubError(
    `could not reach ${h.endpoint} for ${what}: ${why}; set HF_HUB_OFFLINE=1 to use only the local cache, or HF_ENDPOINT for a mirror`,
  );
}

export interface RepoInfo {
  sha: string;
  files: string[];
}

/** GET /api/models/ORG/NAME/revision/REV → the commit and its file list. */
export async function fetchRepoInfo(h: HubEnv, repo: string, revision: string): Promise<RepoInfo> {
  const what = `${repo} (revision ${revision})`;
  const url = `${h.endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}`;
  let res: Response;
  let body: unknown;
  try {
    res = await fetch(url, { headers: authHeaders(h), signal: AbortSignal.timeout(h.metadataTimeoutMs) });
    if (!res.ok) throw await httpError(res, what, h);
    body = await res.json();
  } catch (e) {
    if (e instanceof HubError) throw e;
    if (e instanceof SyntaxError) throw new HubError(`${url} did not return JSON`);
    throw networkError(e, what, h);
  }
  const { sha, siblings } = (body ?? {}) as { sha?: unknown; siblings?: unknown };
  if (typeof sha !== "string" || !/^[\w.-]+$/.test(sha) || !Array.isArray(siblings)) {
    throw new HubError(`${url} returned no usable "sha" and "siblings"`);
  }
  const files = siblings
    .map((s) => (s as { rfilename?: unknown } | null)?.rfilename)
    .filter((f): f is string => typeof f === "string");
  return { sha, files };
}

export interface FileMeta {
  /** Names the blob: X-Linked-Etag (sha256) for LFS files, else the ETag (git blob id). */
  etag: string | null;
  size: number | null;
}

const normalizeEtag = (e: string | null): string | null => e?.replace(/^W\//, "").replace(/"/g, "") || null;

function headerInt(res: Response, name: string): number | null {
  const v = res.headers.get(name);
  return v !== null && /^\d+$/.test(v) ? Number(v) : null;
}

/**
 * HEAD the resolve URL without following the redirect to the CDN: the hub's own 302 carries the
 * X-Linked-Etag/X-Linked-Size of LFS files. Same-origin redirects (a renamed repo) are followed.
 */
export async function fetchFileMeta(h: HubEnv, repo: string, sha: string, file: string): Promise<FileMeta> {
  const what = `${repo}/${file} (commit ${sha})`;
  let url = resolveUrl(h, repo, sha, file);
  for (let hop = 0; hop < 10; hop++) {
    let res: Response;
    try {
      res = await fetch(url, {
        method: "HEAD",
        redirect: "manual",
        headers: { ...authHeaders(h), "accept-encoding": "identity" },
        signal: AbortSignal.timeout(h.metadataTimeoutMs),
      });
    } catch (e) {
      throw networkError(e, what, h);
    }
    const location = res.headers.get("location");
    const next = res.status >= 300 && res.status < 400 && location ? new URL(location, url) : null;
    if (next && next.origin === new URL(url).origin) {
      url = next.href;
      continue;
    }
    if (!next && !res.ok) throw await httpError(res, what, h);
    const etag = normalizeEtag(res.headers.get("x-linked-etag") ?? res.headers.get("etag"));
    const plain = res.ok && !res.headers.get("content-encoding");
    return { etag, size: headerInt(res, "x-linked-size") ?? (plain ? headerInt(res, "content-length") : null) };
  }
  throw new HubError(`too many redirects for ${what}`);
}
