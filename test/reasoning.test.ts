import { expect, test } from "bun:test";
import { ReasoningSplitter } from "../src/server/reasoning.ts";

function splitInPieces(text: string, size: number) {
  const s = new ReasoningSplitter();
  let reasoning = "";
  let content = "";
  for (let i = 0; i < text.length; i += size) {
    const part = s.push(text.slice(i, i + size), i + size >= text.length);
    reasoning += part.reasoning;
    content += part.content;
  }
  return { reasoning, content };
}

test("<think> blocks become reasoning_content, also with tags split across chunks", () => {
  const text = "<think>\nLet me count: 1, 2, 3.\n</think>\n\nThe answer is 3.";
  for (const size of [1, 2, 3, 5, 100]) {
    expect(splitInPieces(text, size)).toEqual({ reasoning: "\nLet me count: 1, 2, 3.\n", content: "The answer is 3." });
  }
});

test("output without a think block is all content; an unfinished block is all reasoning", () => {
  expect(splitInPieces("Plain <think> answer", 3)).toEqual({ reasoning: "", content: "Plain <think> answer" });
  expect(splitInPieces("<thi", 1)).toEqual({ reasoning: "", content: "<thi" });
  expect(splitInPieces("<think>still thinking", 4)).toEqual({ reasoning: "still thinking", content: "" });
});
