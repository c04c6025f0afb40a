import { describe, expect, it } from "vitest";
import { isSampledIn, Logger } from "../../src/lib/logger.ts";
import { randomHex } from "../../src/lib/trace-context.ts";

function capture(options: { level?: "debug" | "info" | "warn" | "error"; sampleRate?: number } = {}, context = {}) {
  const lines: Record<string, unknown>[] = [];
  const logger = new Logger(
    {
      level: options.level ?? "debug",
      sampleRate: options.sampleRate ?? 1,
      sink: (line) => lines.push(JSON.parse(line)),
    },
    context,
  );
  return { logger, lines };
}

describe("Logger", () => {
  it("writes one JSON object per line with level, msg, time and bound context", () => {
    const { logger, lines } = capture({}, { request_id: "req_1", trace_id: "a".repeat(32) });
    logger.child({ workspace_id: "ws_1", task_id: "task_1" }).info("task accepted", { priority: "high" });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: "info",
      msg: "task accepted",
      request_id: "req_1",
      trace_id: "a".repeat(32),
      workspace_id: "ws_1",
      task_id: "task_1",
      priority: "high",
    });
    expect(new Date(lines[0].time as string).toISOString()).toBe(lines[0].time);
  });

  it("drops lines below LOG_LEVEL", () => {
    const { logger, lines } = capture({ level: "warn" });
    logger.debug("d");
    logger.info("i");
    logger.warn("w");
    logger.error("e");
    expect(lines.map((line) => line.level)).toEqual(["warn", "error"]);
  });

  it("samples debug/info per trace but always keeps warn and error", () => {
    const { logger, lines } = capture({ sampleRate: 0 }, { trace_id: "f".repeat(32) });
    logger.info("dropped");
    logger.warn("kept");
    logger.error("kept too");
    expect(lines.map((line) => line.msg)).toEqual(["kept", "kept too"]);
  });

  it("keeps or drops a whole trace, and keeps about the configured share of traces", () => {
    const traceIds = Array.from({ length: 4_000 }, () => randomHex(16));
    const kept = traceIds.filter((id) => isSampledIn(id, 0.25)).length / traceIds.length;
    expect(kept).toBeGreaterThan(0.2);
    expect(kept).toBeLessThan(0.3);

    const droppedTrace = traceIds.find((id) => !isSampledIn(id, 0.25));
    const { logger, lines } = capture({ sampleRate: 0.25 }, { trace_id: droppedTrace });
    logger.info("one");
    logger.child({ task_id: "task_1" }).debug("two");
    expect(lines).toHaveLength(0);
  });

  it("redacts secrets by key and by shape, and serialises errors", () => {
    const { logger, lines } = capture();
    logger.error("upstream failed", {
      headers: { authorization: "Bearer abc.def.ghi", accept: "application/json" },
      api_key: "mgx_aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      note: "retry with mgx_bbbbbbbbbbbbbbbbbbbbbbbb please",
      error: new Error("call failed with Bearer sk-live-123"),
    });
    const text = JSON.stringify(lines[0]);
    expect(text).not.toContain("abc.def.ghi");
    expect(text).not.toContain("mgx_aaaa");
    expect(text).not.toContain("mgx_bbbb");
    expect(text).not.toContain("sk-live-123");
    expect(lines[0]).toMatchObject({
      headers: { authorization: "[REDACTED]", accept: "application/json" },
      api_key: "[REDACTED]",
      error: { name: "Error", message: "call failed with [REDACTED]" },
    });
  });

  it("keeps a key's display prefix, which is meant to be shown, and redacts anything longer", () => {
    const { logger, lines } = capture();
    logger.warn("key use", {
      key: "Demo key (mgx_T93vbj0Y…)",
      leak: "mgx_T93vbj0Yq",
      whole: `x mgx_${"a".repeat(43)} y`,
    });
    expect(lines[0]).toMatchObject({ key: "Demo key (mgx_T93vbj0Y…)", leak: "[REDACTED]", whole: "x [REDACTED] y" });
  });
});
