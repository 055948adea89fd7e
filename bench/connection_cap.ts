// Bun's fetch client keeps at most 256 requests in flight unless BUN_CONFIG_MAX_HTTP_REQUESTS (1–65535) is
// set when the process starts; setting it later does nothing (measured with Bun 1.4.5: 600 concurrent
// requests to a slow server peak at 256 open connections without it and at 600 with it). A load generator
// must not be that bottleneck, so it re-runs itself with the variable set.

export const MAX_HTTP_REQUESTS = 65535;
const ENV = "BUN_CONFIG_MAX_HTTP_REQUESTS";

/** The client's in-flight request cap in this process. */
export function httpRequestCap(): number {
  const v = Number(process.env[ENV]);
  return Number.isInteger(v) && v >= 1 && v <= MAX_HTTP_REQUESTS ? v : 256;
}

/** When the cap is below `needed`, runs this script again with the cap lifted (same argv, stdio inherited,
 * signals forwarded) and exits with its status; otherwise returns. */
export async function ensureHttpRequestCap(needed: number): Promise<void> {
  if (httpRequestCap() >= Math.min(needed, MAX_HTTP_REQUESTS)) return;
  const child = Bun.spawn([process.execPath, ...process.argv.slice(1)], {
    env: { ...process.env, [ENV]: String(MAX_HTTP_REQUESTS) },
    stdio: ["inherit", "inherit", "inherit"],
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => child.kill(signal));
  process.exit(await child.exited);
}
