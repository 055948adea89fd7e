import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { progressPrinter } from "../src/hub/progress_bar.ts";
import { HubError, resolveModel, type DownloadProgress } from "../src/hub/resolve_model.ts";
import { bytes, FakeHub, gitBlobId, sha256, text, type FakeFile } from "./helpers/hub_server.ts";

const SHA = "0123456789abcdef0123456789abcdef01234567";
const SHA2 = "fedcba9876543210fedcba9876543210fedcba98";
const WEIGHTS = bytes(256 * 1024, 7);

const tinyFiles = (): FakeFile[] => [
  { path: "config.json", data: text(`{"architectures":["Qwen3ForCausalLM"],"hidden_size":8}`) },
  { path: "generation_config.json", data: text(`{"temperature":0.6}`) },
  { path: "tokenizer.json", data: text(`{"model":{"type":"BPE"}}`) },
  { path: "tokenizer_config.json", data: text(`{"eos_token":"<|im_end|>"}`) },
  { path: "model.safetensors", data: WEIGHTS, lfs: true },
  { path: "pytorch_model.bin", data: bytes(64 * 1024, 3), lfs: true },
  { path: "README.md", data: text("# tiny") },
  { path: ".gitattributes", data: text("*.bin filter=lfs") },
  { path: "onnx/model.onnx", data: bytes(1000, 4), lfs: true },
  { path: "original/consolidated.safetensors", data: bytes(2000, 5), lfs: true },
];
const WANTED = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"];

let hub: FakeHub;
let home: string;
let env: Record<string, string>;
const temps: string[] = [];

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "minisgl-hub-"));
  temps.push(d);
  return d;
}

beforeEach(() => {
  hub = new FakeHub();
  hub.repos.set("tiny-org/tiny-model", { sha: SHA, files: tinyFiles() });
  home = tempDir();
  env = { HF_HOME: home, HF_ENDPOINT: hub.endpoint };
});
afterEach(() => hub.stop());
afterAll(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

const repoDir = (h = home, id = "tiny-org/tiny-model"): string => join(h, "hub", `models--${id.replace("/", "--")}`);
const blobOf = (d: Uint8Array, lfs: boolean): string => join(repoDir(), "blobs", lfs ? sha256(d) : gitBlobId(d));

function expectBytes(path: string, want: Uint8Array): void {
  const got = readFileSync(path);
  expect(got.length).toBe(want.length);
  expect(Buffer.compare(got, want)).toBe(0);
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected a rejection");
}

describe("download into the HF cache", () => {
  test("layout: refs/main, snapshot symlinks to blobs named by etag, nothing we skip", async () => {
    const events: DownloadProgress[] = [];
    const dir = await resolveModel("tiny-org/tiny-model", { env, onProgress: (p) => events.push(p) });
    const repo = repoDir();
    expect(dir).toBe(join(repo, "snapshots", SHA));
    expect(readFileSync(join(repo, "refs", "main"), "utf8")).toBe(SHA);
    expect(readdirSync(dir).sort()).toEqual([...WANTED].sort());
    for (const f of tinyFiles().filter((f) => WANTED.includes(f.path))) {
      const link = join(dir, f.path);
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
      expect(readlinkSync(link)).toBe(relative(dir, blobOf(f.data, f.lfs === true)));
      expect(readlinkSync(link).startsWith("../../blobs/")).toBe(true);
      expectBytes(link, f.data);
    }
    expect(readdirSync(join(repo, "blobs")).filter((b) => !/^[0-9a-f]{40}$|^[0-9a-f]{64}$/.test(b))).toEqual([]);

    const fetched = hub.requests().filter((r) => r.method === "GET").map((r) => r.path);
    for (const skipped of ["pytorch_model.bin", "README.md", ".gitattributes", "onnx/model.onnx", "original/consolidated.safetensors"]) {
      expect(fetched.some((p) => p.endsWith(`/${skipped}`))).toBe(false);
    }
    expect(hub.requests("cdn").map((r) => r.path)).toEqual([`/blobs/${sha256(WEIGHTS)}`]);

    const finished = events.filter((e) => e.done);
    expect(finished.map((e) => e.file).sort()).toEqual([...WANTED].sort());
    expect(finished.find((e) => e.file === "model.safetensors")).toEqual({ file: "model.safetensors", bytes: WEIGHTS.length, total: WEIGHTS.length, done: true });
  });

  test("a second resolve is served from the cache without any request", async () => {
    const first = await resolveModel("tiny-org/tiny-model", { env });
    const before = hub.seen.length;
    expect(before).toBeGreaterThan(0);
    expect(await resolveModel("tiny-org/tiny-model", { env })).toBe(first);
    expect(hub.seen.length).toBe(before);
  });

  test("HF_HUB_CACHE overrides the hub directory", async () => {
    const cache = tempDir();
    const dir = await resolveModel("tiny-org/tiny-model", { env: { ...env, HF_HUB_CACHE: cache } });
    expect(dir).toBe(join(cache, "models--tiny-org--tiny-model", "snapshots", SHA));
    expect(existsSync(join(home, "hub"))).toBe(false);
  });

  test("sharded weights: only the shards of the index (not consolidated.safetensors)", async () => {
    const s1 = bytes(3000, 11);
    const s2 = bytes(5000, 12);
    const index = { metadata: {}, weight_map: { a: "model-00001-of-00002.safetensors", b: "model-00002-of-00002.safetensors", c: "model-00001-of-00002.safetensors" } };
    hub.repos.set("org/sharded", {
      sha: SHA2,
      files: [
        { path: "config.json", data: text("{}") },
        { path: "tokenizer.json", data: text("{}") },
        { path: "model.safetensors.index.json", data: text(JSON.stringify(index)) },
        { path: "model-00001-of-00002.safetensors", data: s1, lfs: true },
        { path: "model-00002-of-00002.safetensors", data: s2, lfs: true },
        { path: "consolidated.safetensors", data: bytes(9000, 13), lfs: true },
      ],
    });
    const dir = await resolveModel("org/sharded", { env });
    expect(readdirSync(dir).sort()).toEqual(["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json"]);
    expectBytes(join(dir, "model-00002-of-00002.safetensors"), s2);
    expect(hub.requests("cdn").map((r) => r.path).sort()).toEqual([`/blobs/${sha256(s1)}`, `/blobs/${sha256(s2)}`].sort());
  });

  test("no index and no model.safetensors: every *.safetensors at the root, none in subfolders", async () => {
    hub.repos.set("org/glob", {
      sha: SHA2,
      files: [
        { path: "config.json", data: text("{}") },
        { path: "tokenizer.json", data: text("{}") },
        { path: "b.safetensors", data: bytes(100, 21), lfs: true },
        { path: "a.safetensors", data: bytes(100, 22), lfs: true },
        { path: "original/c.safetensors", data: bytes(100, 23), lfs: true },
      ],
    });
    const dir = await resolveModel("org/glob", { env });
    expect(readdirSync(dir).sort()).toEqual(["a.safetensors", "b.safetensors", "config.json", "tokenizer.json"]);
    expect(hub.requests("cdn").length).toBe(2);
  });

  test("a snapshot holding only config.json (e.g. from AutoConfig) is completed, config.json not refetched", async () => {
    const snap = join(repoDir(), "snapshots", SHA);
    mkdirSync(snap, { recursive: true });
    mkdirSync(join(repoDir(), "refs"));
    writeFileSync(join(repoDir(), "refs", "main"), SHA);
    writeFileSync(join(snap, "config.json"), "{}");
    const dir = await resolveModel("tiny-org/tiny-model", { env });
    expect(dir).toBe(snap);
    expect(readFileSync(join(dir, "config.json"), "utf8")).toBe("{}");
    expect(lstatSync(join(dir, "tokenizer.json")).isSymbolicLink()).toBe(true);
    expect(hub.requests().some((r) => r.path.endsWith("/config.json"))).toBe(false);
  });

  test("revision = commit hash: snapshots/<hash>, no ref written", async () => {
    const dir = await resolveModel("tiny-org/tiny-model", { env, revision: SHA });
    expect(dir).toBe(join(repoDir(), "snapshots", SHA));
    expect(existsSync(join(repoDir(), "refs"))).toBe(false);
    expect(hub.requests()[0]!.path).toBe(`/api/models/tiny-org/tiny-model/revision/${SHA}`);
  });

  test("a repo without safetensors weights is refused before downloading", async () => {
    hub.repos.set("org/bin-only", { sha: SHA2, files: [{ path: "config.json", data: text("{}") }, { path: "pytorch_model.bin", data: bytes(10, 1), lfs: true }] });
    const err = await rejection(resolveModel("org/bin-only", { env }));
    expect(err.message).toContain("no *.safetensors");
    expect(hub.requests("cdn")).toEqual([]);
  });
});

describe("offline mode", () => {
  test("HF_HUB_OFFLINE=1 works from the cache alone", async () => {
    const dir = await resolveModel("tiny-org/tiny-model", { env });
    hub.stop();
    const offline = { HF_HOME: home, HF_HUB_OFFLINE: "1", HF_ENDPOINT: "http://127.0.0.1:9" };
    expect(await resolveModel("tiny-org/tiny-model", { env: offline })).toBe(dir);
  });

  test("an uncached model fails clearly, without any request", async () => {
    const err = await rejection(resolveModel("tiny-org/tiny-model", { env: { ...env, HF_HUB_OFFLINE: "1" } }));
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toContain("tiny-org/tiny-model is not in the Hugging Face cache");
    expect(err.message).toContain("HF_HUB_OFFLINE=1");
    expect(hub.seen).toEqual([]);
  });

  test("a partly cached model names what is missing", async () => {
    const snap = join(repoDir(), "snapshots", SHA);
    mkdirSync(snap, { recursive: true });
    mkdirSync(join(repoDir(), "refs"));
    writeFileSync(join(repoDir(), "refs", "main"), SHA);
    writeFileSync(join(snap, "config.json"), "{}");
    const err = await rejection(resolveModel("tiny-org/tiny-model", { env: { ...env, HF_HUB_OFFLINE: "1" } }));
    expect(err.message).toContain("only partly");
    expect(err.message).toContain("tokenizer.json");
    expect(err.message).toContain("*.safetensors");
  });

  test("a hand-made cache of plain files (no symlinks) is accepted", async () => {
    const snap = join(repoDir(), "snapshots", "abc");
    mkdirSync(snap, { recursive: true });
    mkdirSync(join(repoDir(), "refs"));
    writeFileSync(join(repoDir(), "refs", "main"), "abc\n");
    for (const f of ["config.json", "tokenizer.json", "model.safetensors"]) writeFileSync(join(snap, f), "x");
    expect(await resolveModel("tiny-org/tiny-model", { env: { ...env, HF_HUB_OFFLINE: "1" } })).toBe(snap);
  });
});

describe("resume", () => {
  const weightsUrl = `/blobs/${sha256(WEIGHTS)}`;
  const cdnGets = (): (string | null)[] => hub.requests("cdn").filter((r) => r.path === weightsUrl).map((r) => r.range);

  test("a partial .incomplete file left by an earlier run is finished with a Range request", async () => {
    const part = `${blobOf(WEIGHTS, true)}.incomplete`;
    mkdirSync(join(repoDir(), "blobs"), { recursive: true });
    writeFileSync(part, WEIGHTS.subarray(0, 100_000));
    const dir = await resolveModel("tiny-org/tiny-model", { env });
    expect(cdnGets()).toEqual(["bytes=100000-"]);
    expectBytes(join(dir, "model.safetensors"), WEIGHTS);
    expect(existsSync(part)).toBe(false);
  });

  test("a body cut mid-way is resumed with Range within the same resolve", async () => {
    hub.cdnScript.push({ cutAfter: 100_000 });
    const dir = await resolveModel("tiny-org/tiny-model", { env });
    expect(cdnGets()).toEqual([null, "bytes=100000-"]);
    expectBytes(join(dir, "model.safetensors"), WEIGHTS);
  });

  test("a cut followed by a refusal fails; the next resolve resumes from the partial file", async () => {
    hub.cdnScript.push({ cutAfter: 70_000 }, { status: 403 });
    const err = await rejection(resolveModel("tiny-org/tiny-model", { env }));
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toContain("403");
    expect(readFileSync(`${blobOf(WEIGHTS, true)}.incomplete`).length).toBe(70_000);
    expect(existsSync(join(repoDir(), "refs", "main"))).toBe(false);
    expect(existsSync(join(repoDir(), "snapshots", SHA, "config.json"))).toBe(false);

    const dir = await resolveModel("tiny-org/tiny-model", { env });
    expect(cdnGets()).toEqual([null, "bytes=70000-", "bytes=70000-"]);
    expectBytes(join(dir, "model.safetensors"), WEIGHTS);
  });

  test("a server ignoring Range (200) restarts the file from scratch", async () => {
    hub.ignoreRange = true;
    const part = `${blobOf(WEIGHTS, true)}.incomplete`;
    mkdirSync(join(repoDir(), "blobs"), { recursive: true });
    writeFileSync(part, bytes(50_000, 99)); // wrong bytes: must not survive
    const dir = await resolveModel("tiny-org/tiny-model", { env });
    expect(cdnGets()).toEqual(["bytes=50000-"]);
    expectBytes(join(dir, "model.safetensors"), WEIGHTS);
  });

  test("a stalled body times out (HF_HUB_DOWNLOAD_TIMEOUT) and resumes", async () => {
    hub.cdnScript.push({ stallAfter: 30_000 });
    const dir = await resolveModel("tiny-org/tiny-model", { env: { ...env, HF_HUB_DOWNLOAD_TIMEOUT: "0.3" } });
    expect(cdnGets()).toEqual([null, "bytes=30000-"]);
    expectBytes(join(dir, "model.safetensors"), WEIGHTS);
  });

  test("a lock left by a dead process is taken over; a live one is waited for", async () => {
    const blobs = join(repoDir(), "blobs");
    mkdirSync(blobs, { recursive: true });
    const dead = spawnSync("true").pid!;
    const host = (await import("node:os")).hostname();
    writeFileSync(`${blobOf(WEIGHTS, true)}.lock`, `${host} ${dead}`);
    await resolveModel("tiny-org/tiny-model", { env });
    expect(existsSync(`${blobOf(WEIGHTS, true)}.lock`)).toBe(false);

    const other = tempDir();
    const otherEnv = { HF_HOME: other, HF_ENDPOINT: hub.endpoint };
    const lock = join(repoDir(other), "blobs", `${sha256(WEIGHTS)}.lock`);
    mkdirSync(join(repoDir(other), "blobs"), { recursive: true });
    writeFileSync(lock, `${host} ${process.pid}`);
    let settled = false;
    const pending = resolveModel("tiny-org/tiny-model", { env: otherEnv }).finally(() => (settled = true));
    await Bun.sleep(300);
    expect(settled).toBe(false);
    rmSync(lock);
    expect(await pending).toBe(join(repoDir(other), "snapshots", SHA));
  });
});

describe("auth and errors", () => {
  test("HF_TOKEN is sent as Bearer to the hub and not to the CDN", async () => {
    hub.repos.set("org/gated", { sha: SHA2, files: tinyFiles(), token: "hf_secret" });
    const dir = await resolveModel("org/gated", { env: { ...env, HF_TOKEN: "hf_secret" } });
    expect(existsSync(join(dir, "model.safetensors"))).toBe(true);
    const hubAuth = hub.requests("hub").map((r) => r.auth);
    expect(hubAuth.length).toBeGreaterThan(5);
    expect(hubAuth.every((a) => a === "Bearer hf_secret")).toBe(true);
    expect(hub.requests("cdn").every((r) => r.auth === null)).toBe(true);
  });

  test("the token file of `huggingface-cli login` is used when HF_TOKEN is unset", async () => {
    hub.repos.set("org/gated", { sha: SHA2, files: tinyFiles(), token: "hf_file" });
    writeFileSync(join(home, "token"), "hf_file\n");
    await resolveModel("org/gated", { env });
    expect(hub.requests("hub").every((r) => r.auth === "Bearer hf_file")).toBe(true);
  });

  test("401 on a gated model → an error mentioning HF_TOKEN", async () => {
    hub.repos.set("org/gated", { sha: SHA2, files: tinyFiles(), token: "hf_secret" });
    const err = await rejection(resolveModel("org/gated", { env }));
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toContain("401");
    expect(err.message).toContain("org/gated");
    expect(err.message).toContain("set HF_TOKEN");
  });

  test("403 with a refused token says so", async () => {
    hub.repos.set("org/gated", { sha: SHA2, files: tinyFiles(), token: "hf_secret" });
    const err = await rejection(resolveModel("org/gated", { env: { ...env, HF_TOKEN: "hf_wrong" } }));
    expect(err.message).toContain("403");
    expect(err.message).toContain("HF_TOKEN is set but was refused");
  });

  test("404 → not found, naming the model", async () => {
    const err = await rejection(resolveModel("nobody/missing", { env }));
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toContain("not found");
    expect(err.message).toContain("nobody/missing");
    expect(existsSync(repoDir(home, "nobody/missing"))).toBe(false);
  });

  test("unknown revision", async () => {
    const err = await rejection(resolveModel("tiny-org/tiny-model", { env, revision: "v9" }));
    expect(err.message).toContain("revision not found");
    expect(err.message).toContain("revision v9");
  });

  test("an unreachable endpoint suggests HF_HUB_OFFLINE", async () => {
    const err = await rejection(resolveModel("tiny-org/tiny-model", { env: { ...env, HF_ENDPOINT: "http://127.0.0.1:9" } }));
    expect(err.message).toContain("could not reach http://127.0.0.1:9");
    expect(err.message).toContain("HF_HUB_OFFLINE=1");
  });
});

describe("model ids", () => {
  test("a local directory passes through as an absolute path", async () => {
    const d = tempDir();
    expect(await resolveModel(d, { env })).toBe(d);
    const rel = relative(process.cwd(), d);
    expect(await resolveModel(rel, { env })).toBe(resolve(d));
    expect(hub.seen).toEqual([]);
  });

  test("a local-looking path that does not exist is named in the error", async () => {
    for (const p of ["./no/such/model", "/no/such/model", "models/a/b", "../no-such-minisgl-model", "~/no-such-model-dir"]) {
      const err = await rejection(resolveModel(p, { env }));
      expect(err).toBeInstanceOf(HubError);
      expect(err.message).toContain("does not exist");
      expect(err.message).toContain(p.replace(/^\.+\/|^~\//, ""));
    }
    expect(hub.seen).toEqual([]);
  });

  test("a file is not a model directory", async () => {
    const f = join(tempDir(), "config.json");
    writeFileSync(f, "{}");
    expect((await rejection(resolveModel(f, { env }))).message).toContain("is a file, not a model directory");
  });

  test("invalid hub ids are refused without a request", async () => {
    for (const id of ["gpt2", "org/-bad", "org/a--b", "org/a..b", "a b/c", ""]) {
      expect((await rejection(resolveModel(id, { env }))).message).toContain("neither an existing local directory nor a Hugging Face model id");
    }
    expect(hub.seen).toEqual([]);
  });
});

describe("progress printer", () => {
  const sink = (isTTY: boolean, columns = 100) => {
    const out: string[] = [];
    return { out, stream: { isTTY, columns, write: (s: string) => out.push(s) } };
  };

  test("not a TTY: one line per finished file", () => {
    const { out, stream } = sink(false);
    const print = progressPrinter(stream);
    print({ file: "config.json", bytes: 0, total: 10, done: false });
    print({ file: "config.json", bytes: 10, total: 10, done: true });
    print({ file: "model.safetensors", bytes: 0, total: 3_000_000, done: false });
    print({ file: "model.safetensors", bytes: 1_000_000, total: 3_000_000, done: false });
    print({ file: "model.safetensors", bytes: 3_000_000, total: 3_000_000, done: true });
    expect(out.length).toBe(2);
    expect(out[0]).toMatch(/^downloaded config\.json \(0\.0 MB in \d+\.\d s\)\n$/);
    expect(out[1]).toMatch(/^downloaded model\.safetensors \(3\.0 MB in \d+\.\d s\)\n$/);
  });

  test("TTY: one redrawn line with name, MB and speed, ended by a newline", async () => {
    const { out, stream } = sink(true);
    const print = progressPrinter(stream);
    print({ file: "model-00001-of-00004.safetensors", bytes: 1_000_000, total: 4_000_000, done: false });
    await Bun.sleep(150);
    print({ file: "model-00001-of-00004.safetensors", bytes: 2_000_000, total: 4_000_000, done: false });
    print({ file: "model-00001-of-00004.safetensors", bytes: 2_100_000, total: 4_000_000, done: false }); // throttled
    print({ file: "model-00001-of-00004.safetensors", bytes: 4_000_000, total: 4_000_000, done: true });
    expect(out.length).toBe(3);
    for (const line of out) expect(line.startsWith("\r\x1b[2K")).toBe(true);
    expect(out[1]).toContain("model-00001-of-00004.safetensors");
    expect(out[1]).toContain("2.0/4.0 MB");
    expect(out[1]).toMatch(/\d+\.\d MB\/s/);
    expect(out[1]).toContain("[##########..........]");
    expect(out[2]!.endsWith("\n")).toBe(true);
    expect(out[2]).toContain("4.0/4.0 MB");
  });

  test("TTY: a long name is shortened to fit the terminal width", () => {
    const { out, stream } = sink(true, 50);
    progressPrinter(stream)({ file: "some-very-long-directory-name/model-00001-of-00004.safetensors", bytes: 0, total: 4_000_000, done: false });
    const line = out[0]!.replace("\r\x1b[2K", "");
    expect(line.length).toBeLessThan(50);
    expect(line).toMatch(/^….*safetensors \[\.+\] 0\.0\/4\.0 MB$/);
  });
});
