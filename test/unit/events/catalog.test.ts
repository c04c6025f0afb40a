import { describe, expect, it } from "vitest";
import { EVENT_TYPES, type EventType, validateEvent } from "../../../src/events/catalog.ts";
import { eventsJsonSchema } from "../../../src/events/json-schema.ts";
import { MUTATIONS, SEED_EXAMPLES } from "./examples.ts";

function clone<T>(value: T): T {
  return structuredClone(value);
}

function dataPath(event: Record<string, unknown>, path: string): { parent: Record<string, unknown>; key: string } {
  const keys = path.split(".");
  let parent = event.data as Record<string, unknown>;
  for (const key of keys.slice(0, -1)) parent = parent[key] as Record<string, unknown>;
  return { parent, key: keys.at(-1)! };
}

describe("the 21 event types of seed §9", () => {
  it("are all covered, with an example each", () => {
    expect(EVENT_TYPES).toHaveLength(21);
    expect(Object.keys(SEED_EXAMPLES).sort()).toEqual([...EVENT_TYPES].sort());
  });

  it.each(EVENT_TYPES)("%s: the seed example validates", (type) => {
    const check = validateEvent(SEED_EXAMPLES[type], { exactVersion: true });
    expect(check).toMatchObject({ ok: true });
  });

  it.each(EVENT_TYPES)("%s: a missing required data field is rejected", (type: EventType) => {
    const event = clone(SEED_EXAMPLES[type]);
    const { parent, key } = dataPath(event, MUTATIONS[type].required);
    delete parent[key];
    const check = validateEvent(event);
    expect(check.ok).toBe(false);
    if (!check.ok) expect(check.issues.map((issue) => issue.path)).toContain(`data.${MUTATIONS[type].required}`);
  });

  it.each(EVENT_TYPES.filter((type) => MUTATIONS[type].enumField))(
    "%s: a value outside an enum is rejected",
    (type: EventType) => {
      const event = clone(SEED_EXAMPLES[type]);
      const { parent, key } = dataPath(event, MUTATIONS[type].enumField!);
      parent[key] = "not-in-the-enum";
      const check = validateEvent(event);
      expect(check.ok).toBe(false);
      if (!check.ok) expect(check.issues[0].path).toBe(`data.${MUTATIONS[type].enumField}`);
    },
  );

  it.each(["evt-123", "event_123", "evt_", "evt_12 3", "evt_ü"])("event_id %s breaks the pattern", (eventId) => {
    const check = validateEvent({ ...SEED_EXAMPLES["task.started"], event_id: eventId });
    expect(check).toMatchObject({ ok: false, issues: [{ path: "event_id" }] });
  });

  it("rejects envelope mistakes: unknown type, bad timestamp, bad workspace id, missing version", () => {
    const example = SEED_EXAMPLES["tool.call"];
    expect(validateEvent({ ...example, event_type: "task.exploded" }).ok).toBe(false);
    expect(validateEvent({ ...example, timestamp: "yesterday" }).ok).toBe(false);
    expect(validateEvent({ ...example, workspace_id: "ws abc" }).ok).toBe(false);
    const { version: _version, ...noVersion } = example;
    expect(validateEvent(noVersion).ok).toBe(false);
  });

  it("knows task.created 2.0, where estimated_cost is required", () => {
    const v2: Record<string, unknown> = { ...clone(SEED_EXAMPLES["task.created"]), version: "2.0" };
    expect(validateEvent(v2, { exactVersion: true }).ok).toBe(true);
    delete (v2.data as { task: Record<string, unknown> }).task.estimated_cost;
    expect(validateEvent(v2)).toMatchObject({ ok: false, issues: [{ path: "data.task.estimated_cost" }] });
  });

  it("accepts a newer minor against the newest known minor, but not an unknown major", () => {
    const newerMinor = {
      ...SEED_EXAMPLES["tool.call"],
      version: "1.3",
      data: { ...(SEED_EXAMPLES["tool.call"].data as object), added: 1 },
    };
    expect(validateEvent(newerMinor).ok).toBe(true);
    expect(validateEvent(newerMinor, { exactVersion: true }).ok).toBe(false);
    expect(validateEvent({ ...SEED_EXAMPLES["tool.call"], version: "7.0" })).toMatchObject({
      ok: false,
      issues: [{ path: "version" }],
    });
  });
});

describe("the JSON Schema export", () => {
  it("has the envelope and one definition per type and version", () => {
    const schema = eventsJsonSchema() as { $defs: Record<string, any>; oneOf: { $ref: string }[]; $schema: string };
    expect(schema.$schema).toBe("https://json-schema.org/draft/2020-12/schema");
    // 21 types at 1.0, plus task.created 2.0 and llm.provider.error 1.1.
    expect(schema.oneOf).toHaveLength(23);
    expect(Object.keys(schema.$defs)).toEqual(expect.arrayContaining(["task.created@2.0", "llm.provider.error@1.1"]));
    expect(schema.$defs["llm.provider.error@1.1"].properties.data.properties).toHaveProperty("http_status");
    expect(schema.$defs["llm.provider.error@1.0"].properties.data.properties).not.toHaveProperty("http_status");
    expect(schema.$defs.envelope.properties.event_id.pattern).toBe("^evt_[a-zA-Z0-9_]+$");
    expect(schema.$defs.envelope.required).toEqual(
      expect.arrayContaining(["event_id", "event_type", "timestamp", "workspace_id", "data", "version"]),
    );
    const taskCreated = schema.$defs["task.created@1.0"];
    expect(taskCreated.properties.data.properties.task.properties.priority.enum).toEqual([
      "low",
      "medium",
      "high",
      "critical",
    ]);
    expect(taskCreated.properties.data.required).toEqual(["task", "user"]);
  });
});
