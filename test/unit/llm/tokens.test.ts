import { describe, expect, it } from "vitest";
import { DeliveredText, estimateAnswerUsage, estimatePromptTokens, textTokens } from "../../../src/llm/tokens.ts";

/**
 * Estimates stand in for a provider's count where it has none yet (a reservation) or never gives one
 * (a stream cut short). Providers' tokenizers give English about four characters a token; Chinese,
 * Japanese and Korean about one a character; other scripts about two or three.
 */

describe("token estimates", () => {
  it("counts English and code at four characters a token", () => {
    expect(textTokens("Refactor the parser.")).toBe(5);
    expect(estimatePromptTokens([{ role: "user", content: "Refactor the parser." }])).toBe(5 + 4);
  });

  it("counts Chinese, Japanese and Korean a token a character, not a quarter, so their budgets are not under-reserved", () => {
    // 12 characters, about 12 tokens to a provider; four characters a token said 3.
    const chinese = "请重构这个解析器并添加测试";
    expect(textTokens(chinese)).toBe(chinese.length);
    expect(textTokens("パーサーを直して")).toBe(8);
    expect(textTokens("파서를 고쳐 주세요")).toBeCloseTo(8 + 2 / 4);
  });

  it("counts other non-ASCII text at two characters a token, and an emoji once though it is two UTF-16 units", () => {
    expect(textTokens("Исправь парсер")).toBeCloseTo(13 / 2 + 1 / 4);
    expect(textTokens("ok 👍")).toBeCloseTo(3 / 4 + 1 / 2);
  });

  it("estimates a delivered stream and an answer without usage the same way", () => {
    const delivered = new DeliveredText();
    delivered.add({ type: "delta", content: "修复了" });
    delivered.add({ type: "delta", content: "解析器" });
    expect(delivered.estimatedTokens()).toBe(6);
    const usage = estimateAnswerUsage(
      { messages: [{ role: "user", content: "修复解析器" }] },
      { role: "assistant", content: "已修复" },
    );
    expect(usage).toEqual({ prompt_tokens: 5 + 4, completion_tokens: 3, total_tokens: 12 });
  });
});
