import {
  compareVersions,
  EVENT_DATA_VERSIONS,
  EVENT_TYPES,
  type EventEnvelope,
  type EventType,
  parseVersion,
} from "./catalog.ts";

/**
 * Versioning (seed §9.3): `version` is `major.minor`. A consumer that asks for
 * a version gets each event at the newest version of its type not above it:
 *   - older events are migrated forward by a chain of upcasters, one step per version;
 *   - a newer minor of the same major is taken back down: minors only add
 *     optional fields, so dropping them gives exactly the older shape;
 *   - a newer major is never downcast (it may have removed or changed fields),
 *     so it is delivered as it is.
 */

export interface VersionStep {
  type: EventType;
  from: string;
  to: string;
  up(event: EventEnvelope): EventEnvelope;
  /** Only for a minor step: back from `to` to `from`. */
  down?(event: EventEnvelope): EventEnvelope;
}

export const VERSION_STEPS: readonly VersionStep[] = [
  {
    // Seed §9.3: 2.0 requires `estimated_cost`; 1.0 events without it cost 0.
    type: "task.created",
    from: "1.0",
    to: "2.0",
    up(event) {
      const data = event.data as { task: Record<string, unknown> };
      return {
        ...event,
        data: { ...data, task: { ...data.task, estimated_cost: data.task.estimated_cost ?? 0 } },
      };
    },
  },
  {
    // 1.1 adds the optional `http_status`: a 1.0 event simply lacks it (unknown, which is not null: no answer).
    type: "llm.provider.error",
    from: "1.0",
    to: "1.1",
    up: (event) => event,
    down(event) {
      const { http_status: _httpStatus, ...data } = event.data;
      return { ...event, data };
    },
  },
];

const byTypeAndFrom = new Map(VERSION_STEPS.map((step) => [`${step.type}@${step.from}`, step]));
const byTypeAndTo = new Map(VERSION_STEPS.filter((step) => step.down).map((step) => [`${step.type}@${step.to}`, step]));

/** The event at the newest version of its type not above `target`, where a step leads there; else unchanged. */
export function atVersion<T extends EventEnvelope>(event: T, target: string): T {
  let current: EventEnvelope = event;
  for (;;) {
    const down = byTypeAndTo.get(`${current.event_type}@${current.version}`);
    if (!down || compareVersions(current.version, target) <= 0) break;
    current = { ...down.down!(current), version: down.from };
  }
  for (;;) {
    const up = byTypeAndFrom.get(`${current.event_type}@${current.version}`);
    if (!up || compareVersions(up.to, target) > 0) break;
    current = { ...up.up(current), version: up.to };
  }
  return current as T;
}

/** @deprecated The SDK's earlier name for atVersion, which now also takes a newer minor back down. */
export const upcast = atVersion;

/** Majors some event type has: a consumer may ask for any of them. */
export function supportedMajors(): number[] {
  const majors = new Set<number>();
  for (const type of EVENT_TYPES)
    for (const version of Object.keys(EVENT_DATA_VERSIONS[type])) majors.add(parseVersion(version)?.major ?? 0);
  return [...majors].sort((a, b) => a - b);
}

export type VersionRequest = { ok: true; version: string } | { ok: false; message: string };

/** Checks a consumer's `?version=`: well-formed and of a major we know. */
export function checkRequestedVersion(requested: string): VersionRequest {
  const parsed = parseVersion(requested);
  if (!parsed) return { ok: false, message: `version must be major.minor (e.g. 1.0), got "${requested}"` };
  const majors = supportedMajors();
  if (!majors.includes(parsed.major)) {
    return {
      ok: false,
      message: `unknown major version ${parsed.major}; supported majors: ${majors.join(", ")}`,
    };
  }
  return { ok: true, version: requested };
}
