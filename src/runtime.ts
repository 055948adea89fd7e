// Start-up check that we run on the Bun version the project is pinned to (package.json "engines").
import pkg from "../package.json" with { type: "json" };

export const REQUIRED_BUN = pkg.engines.bun;

export function checkBunVersion(): void {
  if (typeof Bun === "undefined") {
    throw new Error(`minisgl runs on Bun ${REQUIRED_BUN}, not Node: install it with \`npm install -g bun@${REQUIRED_BUN}\``);
  }
  if (Bun.version !== REQUIRED_BUN && process.env.MINISGL_ALLOW_ANY_BUN !== "1") {
    throw new Error(`minisgl is pinned to Bun ${REQUIRED_BUN} but this is Bun ${Bun.version}: ` +
      `run \`npm install -g bun@${REQUIRED_BUN}\` (or set MINISGL_ALLOW_ANY_BUN=1 to try anyway)`);
  }
}
