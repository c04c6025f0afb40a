import {
  compareVersions,
  EVENT_DATA_VERSIONS,
  EVENT_TYPES,
  type EventEnvelope,
  type EventType,
  parseVersion,
} from "./catalog.ts";

/**
 * Versioning (seed §9.3): `version` is `major.minor`. Old events are migrated
 * forward by a chain of upcasters, one step per version; nothing is ever
 * downcast. A consumer asking for `?version=2.0` receives every event at the
 * newest version of its type that is not above 2.0.
 */

export interface Upcaster {
  type: EventType;
  from: string;
  to: string;
  up(event: EventEnvelope): EventEnvelope;
}

export const UPCASTERS: readonly Upcaster[] = [
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
];

const byTypeAndFrom = new Map(UPCASTERS.map((upcaster) => [`${upcaster.type}@${upcaster.from}`, upcaster]));

/** The event at the newest version of its type not above `target`; unchanged when none applies. */
export function upcast<T extends EventEnvelope>(event: T, target: string): T {
  let current: EventEnvelope = event;
  for (;;) {
    const step = byTypeAndFrom.get(`${current.event_type}@${current.version}`);
    if (!step || compareVersions(step.to, target) > 0) break;
    current = { ...step.up(current), version: step.to };
  }
  return current as T;
}

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
