// A fake Hugging Face hub on 127.0.0.1: the revision API and resolve URLs, with LFS files redirected
// (302 + X-Linked-Etag/X-Linked-Size) to a second server, the "CDN", on another origin.
import type { Server } from "bun";

export interface FakeFile {
  path: string;
  data: Uint8Array;
  /** Served like LFS files: a redirect to the CDN, named by sha256. */
  lfs?: boolean;
}

export interface FakeRepo {
  sha: string;
  files: FakeFile[];
  /** A gated/private repo: requests must carry `Bearer <token>`. */
  token?: string;
}

export interface Seen {
  server: "hub" | "cdn";
  method: string;
  path: string;
  range: string | null;
  auth: string | null;
}

/** What the CDN does with the next blob GETs, in order (then it serves normally). */
export type CdnAction = { cutAfter: number } | { stallAfter: number } | { status: number };

export const text = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Deterministic pseudo-random bytes. */
export function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export const sha256 = (d: Uint8Array): string => new Bun.CryptoHasher("sha256").update(d).digest("hex");
/** The git blob id, which the hub sends as the ETag of non-LFS files. */
export const gitBlobId = (d: Uint8Array): string =>
  new Bun.CryptoHasher("sha1").update(text(`blob ${d.length}\0`)).update(d).digest("hex");

export class FakeHub {
  readonly repos = new Map<string, FakeRepo>();
  readonly seen: Seen[] = [];
  readonly cdnScript: CdnAction[] = [];
  /** The CDN answers Range requests with 200 and the whole file. */
  ignoreRange = false;
  private readonly hub: Server<undefined>;
  private readonly cdn: Server<undefined>;

  constructor() {
    this.cdn = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req) => this.serveCdn(req) });
    this.hub = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req) => this.serveHub(req) });
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.hub.port}`;
  }

  requests(server?: "hub" | "cdn"): Seen[] {
    return this.seen.filter((s) => server === undefined || s.server === server);
  }

  stop(): void {
    this.hub.stop(true);
    this.cdn.stop(true);
  }

  private record(server: "hub" | "cdn", req: Request): URL {
    const url = new URL(req.url);
    const h = req.headers;
    this.seen.push({ server, method: req.method, path: decodeURIComponent(url.pathname), range: h.get("range"), auth: h.get("authorization") });
    return url;
  }

  private serveHub(req: Request): Response {
    const url = this.record("hub", req);
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(url.pathname);
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const id = decodeURIComponent((api ?? resolve)?.[1] ?? "");
    const repo = this.repos.get(id);
    if (!api && !resolve) return new Response("no route", { status: 400 });
    if (!repo) return hubError(404, "RepoNotFound", "Repository not found");
    if (repo.token !== undefined) {
      const auth = req.headers.get("authorization");
      if (auth === null) return hubError(401, "GatedRepo", `Access to model ${id} is restricted. You must have access to it and be authenticated to access it.`);
      if (auth !== `Bearer ${repo.token}`) return hubError(403, "GatedRepo", "Invalid credentials");
    }
    const rev = decodeURIComponent((api ?? resolve)![2]!);
    if (rev !== "main" && rev !== repo.sha) return hubError(404, "RevisionNotFound", `Invalid rev id: ${rev}`);
    if (api) {
      return Response.json({ id, sha: repo.sha, siblings: repo.files.map((f) => ({ rfilename: f.path })) });
    }
    const file = repo.files.find((f) => f.path === decodeURIComponent(resolve![3]!));
    if (!file) return hubError(404, "EntryNotFound", "Entry not found");
    if (file.lfs) {
      return new Response(null, {
        status: 302,
        headers: {
          location: `http://127.0.0.1:${this.cdn.port}/blobs/${sha256(file.data)}`,
          "x-linked-etag": `"${sha256(file.data)}"`,
          "x-linked-size": String(file.data.length),
          "x-repo-commit": repo.sha,
        },
      });
    }
    return new Response(file.data, { headers: { etag: `"${gitBlobId(file.data)}"`, "x-repo-commit": repo.sha } });
  }

  private serveCdn(req: Request): Response {
    const url = this.record("cdn", req);
    const want = url.pathname.slice("/blobs/".length);
    const data = [...this.repos.values()].flatMap((r) => r.files).find((f) => f.lfs && sha256(f.data) === want)?.data;
    if (!data) return new Response("no such blob", { status: 404 });
    if (req.method === "HEAD") return new Response(data);

    const range = /^bytes=(\d+)-$/.exec(req.headers.get("range") ?? "");
    const start = range && !this.ignoreRange ? Number(range[1]) : 0;
    if (start >= data.length && range) {
      return new Response(null, { status: 416, headers: { "content-range": `bytes */${data.length}` } });
    }
    const body = data.subarray(start);
    const headers = range && !this.ignoreRange ? { "content-range": `bytes ${start}-${data.length - 1}/${data.length}` } : undefined;
    const status = headers ? 206 : 200;
    const action = this.cdnScript.shift();
    if (action === undefined) return new Response(body, { status, headers });
    if ("status" in action) return new Response("denied", { status: action.status });
    // A body cut off (or hanging) after some bytes; chunked, since a stream has no Content-Length here.
    const n = "cutAfter" in action ? action.cutAfter : action.stallAfter;
    const stream = new ReadableStream<Uint8Array>({
      async start(c) {
        c.enqueue(body.slice(0, n));
        if ("cutAfter" in action) {
          await Bun.sleep(20);
          c.error();
        }
      },
    });
    return new Response(stream, { status, headers });
  }
}

function hubError(status: number, code: string, message: string): Response {
  return Response.json({ error: message }, { status, headers: { "x-error-code": code, "x-error-message": message } });
}
