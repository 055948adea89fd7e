// Start-up check that we run on the Bun version the project is pinned to (package.json "engines").
import pkg from "../package.json" with { type: "json" };

export const REQUIRED_BUN = pkg.engines.bun;

/** Why this runtime cannot run minisgl, or null when it can. */
export function bunVersionProblem(actual: string | undefined, required = REQUIRED_BUN): string | null {
  if (actual === undefined) return `minisgl runs on Bun ${required}, not Node: install it with \`npm install -g bun@${required}\``;
  if (actual === required || process.env.MINISGL_ALLOW_ANY_BUN === "1") return null;
  return `minisgl is pinned to Bun ${required} but this is Bun ${actual}: ` +
    `run \`npm install -g bun@${required}\` (or set MINISGL_ALLOW_ANY_BUN=1 to try anyway)`;
}

export function checkBunVersion(): void {
  const problem = bunVersionProblem(typeof Bun === "undefined" ? undefined : Bun.version);
  if (problem) throw new Error(problem);
}
