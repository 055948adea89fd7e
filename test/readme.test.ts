// The README's flags table is generated from the CLI definition; this fails when someone changes a flag
// without running `bun run readme:flags`.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { BEGIN, END, flagsMarkdown, README, withFlags } from "../scripts/readme_flags.ts";

test("README flags table matches the CLI (fix: bun run readme:flags)", () => {
  const readme = readFileSync(README, "utf8");
  const section = readme.slice(readme.indexOf(BEGIN) + BEGIN.length, readme.indexOf(END)).trim();
  expect(readme.indexOf(BEGIN)).toBeGreaterThanOrEqual(0);
  expect(section).toBe(flagsMarkdown());
});

test("every serve, shell and generate flag is in the table", () => {
  const table = flagsMarkdown();
  for (const flag of ["--model <id>", "--device <auto\\|cpu\\|cuda>", "--port <n>", "--tp <n>", "--max-tokens <n>", "--model-path <dir>"]) {
    expect(table).toContain(`\`${flag}\``);
  }
});

test("rewriting replaces only the section between the markers", () => {
  const doc = `intro\n${BEGIN}\nold table\n${END}\noutro\n`;
  expect(withFlags(doc, "new")).toBe(`intro\n${BEGIN}\nnew\n${END}\noutro\n`);
  expect(() => withFlags("no markers", "new")).toThrow(/lacks the markers/);
});
