import { z } from "zod";
import { EVENT_TYPES, EventEnvelopeSchema, eventSchema, versionsOf } from "./catalog.ts";

/**
 * The contract as JSON Schema (draft 2020-12), served at
 * `GET /api/v1/events/schema`: the envelope, and one schema per event type and
 * version under `$defs` (`task.created@1.0`, …); `oneOf` accepts any of them.
 */

let cached: Record<string, unknown> | undefined;

export function eventsJsonSchema(): Record<string, unknown> {
  if (cached) return cached;
  const defs: Record<string, unknown> = { envelope: toJson(EventEnvelopeSchema) };
  const refs: { $ref: string }[] = [];
  for (const type of EVENT_TYPES) {
    for (const version of versionsOf(type)) {
      const name = `${type}@${version}`;
      defs[name] = toJson(eventSchema(type, version)!);
      refs.push({ $ref: `#/$defs/${name}` });
    }
  }
  cached = {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: "https://mgx-ai.dev/schemas/events.json",
    title: "MGX-AI event",
    description:
      "Every event the API publishes. `event_type` and `version` select the data shape; `seq` is assigned per workspace.",
    event_types: [...EVENT_TYPES],
    oneOf: refs,
    $defs: defs,
  };
  return cached;
}

function toJson(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _ignored, ...rest } = z.toJSONSchema(schema, { target: "draft-2020-12", unrepresentable: "any" });
  return rest;
}
