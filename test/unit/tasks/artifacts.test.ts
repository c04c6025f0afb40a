import { describe, expect, it } from "vitest";
import { ArtifactError, mimeTypeFor, sanitizePath } from "../../../src/tasks/artifacts.ts";
import { RETRY_MAX_DELAY_SECONDS, retryDelaySeconds } from "../../../src/tasks/config.ts";
import { parseTaskMessage, taskMessage } from "../../../src/tasks/messages.ts";

describe("artifact paths", () => {
  it("normalises harmless forms", () => {
    expect(sanitizePath("src/./index.ts")).toBe("src/index.ts");
    expect(sanitizePath("docs//guide.md")).toBe("docs/guide.md");
    expect(sanitizePath("a b/ü.txt")).toBe("a b/ü.txt");
    // One spelling per name: a decomposed "é" is the composed one's file.
    expect(sanitizePath("caf\u0065\u0301.md")).toBe("caf\u00e9.md");
    expect(sanitizePath("v1.2/notes.md")).toBe("v1.2/notes.md");
  });

  it.each([
    ["", 400],
    ["../secret", 400],
    ["a/../../b", 400],
    ["/etc/passwd", 400],
    ["C:/Windows/x", 400],
    ["~/x", 400],
    ["a\\b", 400],
    ["dir/", 400],
    ["ok\u0000.txt", 400],
    ["new\nline", 400],
    ["x".repeat(513), 400],
    // Names that read as another: a bidi override (invoice\u202Efdp.exe shows as "invoiceexe.pdf"), zero-width space.
    ["invoice\u202Efdp.exe", 400],
    ["read\u200Bme.md", 400],
    // Full-width dots, ".." once compatibility-normalised; a name ending in a dot or a space.
    ["\uff0e\uff0e/x", 400],
    ["a.txt ", 400],
    ["dir./a.txt", 400],
  ])("refuses %j", (path, status) => {
    expect(() => sanitizePath(path)).toThrow(ArtifactError);
    try {
      sanitizePath(path);
    } catch (error) {
      expect((error as ArtifactError).status).toBe(status);
    }
  });

  it("refuses what is not a string", () => {
    expect(() => sanitizePath(undefined)).toThrow(/required/);
    expect(() => sanitizePath(42)).toThrow(/required/);
  });
});

describe("MIME types", () => {
  it("come from the extension, text with a charset", () => {
    expect(mimeTypeFor("src/a.ts")).toBe("text/typescript; charset=utf-8");
    expect(mimeTypeFor("README.MD")).toBe("text/markdown; charset=utf-8");
    expect(mimeTypeFor("data.json")).toBe("application/json; charset=utf-8");
    expect(mimeTypeFor("logo.png")).toBe("image/png");
    expect(mimeTypeFor("Makefile")).toBe("text/plain; charset=utf-8");
    expect(mimeTypeFor("dir.v2/notes")).toBe("text/plain; charset=utf-8");
  });
});

describe("retry backoff", () => {
  it("is full jitter under an exponential ceiling, in whole seconds, at least 1", () => {
    expect(retryDelaySeconds(1, () => 1)).toBe(2);
    expect(retryDelaySeconds(2, () => 1)).toBe(4);
    expect(retryDelaySeconds(3, () => 1)).toBe(8);
    expect(retryDelaySeconds(30, () => 1)).toBe(RETRY_MAX_DELAY_SECONDS);
    expect(retryDelaySeconds(3, () => 0)).toBe(1);
    const draws = Array.from({ length: 200 }, () => retryDelaySeconds(3));
    expect(Math.min(...draws)).toBeGreaterThanOrEqual(1);
    expect(Math.max(...draws)).toBeLessThanOrEqual(8);
    expect(new Set(draws).size).toBeGreaterThan(3);
  });
});

describe("task messages", () => {
  it("round-trip and refuse foreign bodies", () => {
    expect(parseTaskMessage(taskMessage("ws_1", "task_1"))).toEqual({ v: 1, task_id: "task_1", workspace_id: "ws_1" });
    expect(parseTaskMessage({ ...taskMessage("ws_1", "task_1"), reason: "lease_expired" })?.reason).toBe(
      "lease_expired",
    );
    for (const body of [null, "task_1", { task_id: "t" }, { v: 2, task_id: "t", workspace_id: "w" }]) {
      expect(parseTaskMessage(body)).toBeNull();
    }
  });
});
