import { EVENT_TYPES } from "./catalog.ts";

/**
 * What a socket wants: event types (exact, `*`, or a prefix wildcard such as
 * `task.*` or `workflow.step.*`) and channels (`task:{id}`, `run:{id}`,
 * `workflow:{id}`, or `*`). Both default to `*`. subscribe adds to the sets,
 * unsubscribe removes from them, so narrowing a default subscription means
 * unsubscribing `*`.
 */

export const ALL = "*";
export const MAX_PATTERNS = 50;

export interface Subscription {
  types: string[];
  channels: string[];
}

const TYPE_PATTERN = /^(\*|[a-z_]+(\.[a-z_]+)*(\.\*)?)$/;
const CHANNEL_PATTERN = /^(\*|(task|run|workflow):[A-Za-z0-9_-]{1,128})$/;

/** Characters of a refused value quoted back: the client knows the rest, and a 1 MB pattern should not come back whole. */
const QUOTED_MAX_CHARS = 64;

function quoted(value: string): string {
  return `"${value.length > QUOTED_MAX_CHARS ? `${value.slice(0, QUOTED_MAX_CHARS)}…` : value}"`;
}

export type ListCheck = { ok: true; values: string[] } | { ok: false; message: string };

/** `task.*,tool.call` → checked patterns; an empty list means everything. */
export function checkTypePatterns(values: readonly string[]): ListCheck {
  for (const value of values) {
    if (!TYPE_PATTERN.test(value)) return { ok: false, message: `${quoted(value)} is not an event type or pattern` };
    if (!value.endsWith("*") && !(EVENT_TYPES as readonly string[]).includes(value))
      return { ok: false, message: `${quoted(value)} is not a known event type` };
    // A wildcard no type falls under (`tasks.*` for `task.*`) would be accepted and never match anything.
    if (value !== ALL && value.endsWith("*") && !EVENT_TYPES.some((type) => type.startsWith(value.slice(0, -1))))
      return { ok: false, message: `${quoted(value)} matches no event type (GET /api/v1/events/schema lists them)` };
  }
  if (values.length > MAX_PATTERNS) return { ok: false, message: `at most ${MAX_PATTERNS} type patterns` };
  return { ok: true, values: [...new Set(values)] };
}

export function checkChannels(values: readonly string[]): ListCheck {
  for (const value of values) {
    if (!CHANNEL_PATTERN.test(value))
      return { ok: false, message: `${quoted(value)} is not a channel (task:{id}, run:{id}, workflow:{id} or *)` };
  }
  if (values.length > MAX_PATTERNS) return { ok: false, message: `at most ${MAX_PATTERNS} channels` };
  return { ok: true, values: [...new Set(values)] };
}

export function splitList(csv: string | null | undefined): string[] {
  if (!csv) return [];
  return csv
    .split(",")
    .map((part) => part.trim())
    .filter((part) => part.length > 0);
}

/** The channels an event belongs to, from its envelope and the ids in its data. */
export function channelsOf(event: {
  task_id?: string | null;
  run_id?: string | null;
  data?: Record<string, unknown>;
}): string[] {
  const channels = new Set<string>();
  const data = event.data ?? {};
  const taskId = event.task_id ?? (typeof data.task_id === "string" ? data.task_id : undefined);
  if (taskId) channels.add(`task:${taskId}`);
  if (event.run_id) channels.add(`run:${event.run_id}`);
  for (const key of ["workflow_id", "workflow_execution_id"]) {
    const value = data[key];
    if (typeof value === "string") channels.add(`workflow:${value}`);
  }
  const task = data.task as { id?: unknown } | undefined;
  if (!taskId && typeof task?.id === "string") channels.add(`task:${task.id}`);
  return [...channels];
}

/** A subscription compiled for the hot path: one Set lookup per event in the common cases. */
export class Matcher {
  private readonly allTypes: boolean;
  private readonly exactTypes: Set<string>;
  private readonly prefixes: string[];
  private readonly allChannels: boolean;
  private readonly channels: Set<string>;

  constructor(subscription: Subscription) {
    this.allTypes = subscription.types.includes(ALL);
    this.exactTypes = new Set(subscription.types.filter((type) => !type.endsWith("*")));
    this.prefixes = subscription.types.filter((type) => type.endsWith(".*")).map((type) => type.slice(0, -1));
    this.allChannels = subscription.channels.includes(ALL);
    this.channels = new Set(subscription.channels);
  }

  matchesType(type: string): boolean {
    if (this.allTypes || this.exactTypes.has(type)) return true;
    for (const prefix of this.prefixes) if (type.startsWith(prefix)) return true;
    return false;
  }

  matchesChannels(eventChannels: readonly string[]): boolean {
    if (this.allChannels) return true;
    for (const channel of eventChannels) if (this.channels.has(channel)) return true;
    return false;
  }

  matches(type: string, eventChannels: readonly string[]): boolean {
    return this.matchesType(type) && this.matchesChannels(eventChannels);
  }
}

/** The defaults (`*`) fill in what the client did not name. */
export function initialSubscription(types: string[], channels: string[]): Subscription {
  return { types: types.length ? types : [ALL], channels: channels.length ? channels : [ALL] };
}

/** The union, whatever its size: the caller refuses one over the limit (see oversize). */
export function addTo(subscription: Subscription, types: string[], channels: string[]): Subscription {
  return {
    types: [...new Set([...subscription.types, ...types])],
    channels: [...new Set([...subscription.channels, ...channels])],
  };
}

/**
 * Why a subscription is over the limit, or null. A subscribe that would pass it is refused whole: cutting the
 * union down would drop patterns the client was just told it has, and the events they match with them.
 */
export function oversize(subscription: Subscription): string | null {
  for (const [list, what] of [
    [subscription.types, "type patterns"],
    [subscription.channels, "channels"],
  ] as const) {
    if (list.length > MAX_PATTERNS)
      return `a subscription holds at most ${MAX_PATTERNS} ${what}; this one would hold ${list.length}: unsubscribe some first`;
  }
  return null;
}

export function removeFrom(subscription: Subscription, types: string[], channels: string[]): Subscription {
  return {
    types: subscription.types.filter((type) => !types.includes(type)),
    channels: subscription.channels.filter((channel) => !channels.includes(channel)),
  };
}
