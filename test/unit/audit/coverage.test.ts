import { createRoute, OpenAPIHono } from "@hono/zod-openapi";
import { describe, expect, it } from "vitest";
import { openApiDocument } from "../../../src/app.ts";
import {
  AUDIT_ACTION_EXTENSION,
  AUDIT_EXEMPT_EXTENSION,
  auditCoverageGaps,
  auditExemptions,
} from "../../../src/audit/index.ts";

describe("audit coverage of mutating routes", () => {
  it("every POST/PUT/PATCH/DELETE operation of the API declares a catalogued x-audit-action", () => {
    const document = openApiDocument();
    const gaps = auditCoverageGaps(document as { paths?: Record<string, unknown> });
    expect(
      gaps,
      `routes without audit coverage:\n${gaps.map((g) => `${g.method} ${g.path}: ${g.problem}`).join("\n")}`,
    ).toEqual([]);
  });

  it("exempts only the operations listed here, each with its reason", () => {
    const exemptions = auditExemptions(openApiDocument() as { paths?: Record<string, unknown> });
    expect(Object.keys(exemptions)).toEqual([
      "POST /api/v1/llm/chat/completions",
      "POST /api/v1/llm/responses",
      "DELETE /api/v1/llm/responses/{id}",
    ]);
    expect(exemptions["POST /api/v1/llm/chat/completions"]).toContain("usage row");
    expect(exemptions["POST /api/v1/llm/responses"]).toContain("usage row");
    expect(exemptions["DELETE /api/v1/llm/responses/{id}"]).toContain("not configuration");
  });

  it("@hono/zod-openapi copies the x-audit-action extension into the operation", () => {
    const app = new OpenAPIHono();
    const route = createRoute({
      method: "post",
      path: "/things",
      [AUDIT_ACTION_EXTENSION]: "task.create",
      responses: { 201: { description: "made" } },
    });
    app.openapi(route, (c) => c.body(null, 201));
    const document = app.getOpenAPI31Document({ openapi: "3.1.0", info: { title: "t", version: "1" } });
    const operation = document.paths?.["/things"]?.post as Record<string, unknown> | undefined;
    expect(operation?.[AUDIT_ACTION_EXTENSION]).toBe("task.create");
  });

  it("reports a mutating operation without the extension, or with an action outside the catalogue", () => {
    const document = {
      paths: {
        "/api/v1/tasks": { get: {}, post: { [AUDIT_ACTION_EXTENSION]: "task.create" } },
        "/api/v1/things/{id}": { delete: {}, patch: { [AUDIT_ACTION_EXTENSION]: "thing.update" } },
        "/__debug/echo": { post: {} },
        "/api/v1/metered": { post: { [AUDIT_EXEMPT_EXTENSION]: "recorded as a usage row" } },
        "/api/v1/careless": { post: { [AUDIT_EXEMPT_EXTENSION]: " " } },
        "/api/v1/both": {
          put: { [AUDIT_ACTION_EXTENSION]: "task.create", [AUDIT_EXEMPT_EXTENSION]: "recorded elsewhere" },
        },
      },
    };
    expect(auditCoverageGaps(document)).toEqual([
      { method: "PATCH", path: "/api/v1/things/{id}", problem: 'unknown audit action "thing.update"' },
      { method: "DELETE", path: "/api/v1/things/{id}", problem: "no x-audit-action" },
      { method: "POST", path: "/api/v1/careless", problem: "x-audit-exempt without a reason" },
      { method: "PUT", path: "/api/v1/both", problem: "both x-audit-action and x-audit-exempt" },
    ]);
  });
});
