/**
 * Prefixed, time-sortable ids: `<prefix>_<ULID>`, e.g. `evt_01HNYZ8Q4C7WJ3D0T5X0KQ2F9B`.
 * The ULID's first 10 characters encode milliseconds since the epoch, so ids
 * sort by creation time as plain strings, which D1 indexes use directly.
 */

export const ID_PREFIXES = {
  workspace: "ws",
  apiKey: "key",
  task: "task",
  run: "run",
  event: "evt",
  artifact: "art",
  workflow: "wf",
  workflowExecution: "wfx",
  deadLetter: "dlq",
  auditLog: "aud",
} as const;

export type IdKind = keyof typeof ID_PREFIXES;
export type IdPrefix = (typeof ID_PREFIXES)[IdKind];

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const TIME_CHARS = 10;
const RANDOM_CHARS = 16;

let lastTimeMs = -1;
let lastRandom = new Uint8Array(RANDOM_CHARS);

/** Ids made within one millisecond in this isolate stay in creation order. */
function nextRandom(timeMs: number): Uint8Array {
  if (timeMs === lastTimeMs) {
    const next = lastRandom.slice();
    for (let i = RANDOM_CHARS - 1; i >= 0; i--) {
      if (next[i] < 31) {
        next[i] += 1;
        break;
      }
      next[i] = 0;
    }
    lastRandom = next;
    return next;
  }
  const bytes = crypto.getRandomValues(new Uint8Array(RANDOM_CHARS));
  // Leave headroom in the top digit so increments within a millisecond do not wrap.
  bytes[0] &= 0x0f;
  for (let i = 1; i < RANDOM_CHARS; i++) bytes[i] &= 0x1f;
  lastTimeMs = timeMs;
  lastRandom = bytes;
  return bytes;
}

let lastTimePart = { timeMs: -1, text: "" };

/** The ULID's time characters; Workers' clock stands still within a request, so one request's ids share them. */
function timePart(timeMs: number): string {
  if (timeMs === lastTimePart.timeMs) return lastTimePart.text;
  let text = "";
  let remaining = timeMs;
  for (let i = 0; i < TIME_CHARS; i++) {
    text = CROCKFORD[remaining % 32] + text;
    remaining = Math.floor(remaining / 32);
  }
  lastTimePart = { timeMs, text };
  return text;
}

export function ulid(timeMs: number = Date.now()): string {
  const time = timePart(timeMs);
  let random = "";
  for (const digit of nextRandom(timeMs)) random += CROCKFORD[digit];
  return time + random;
}

export function newId(kind: IdKind, timeMs?: number): string {
  return `${ID_PREFIXES[kind]}_${ulid(timeMs)}`;
}

/** Milliseconds since the epoch encoded in a prefixed id, or null if it is not one of ours. */
export function idTimeMs(id: string): number | null {
  const match = /^[a-z]+_([0-9A-HJKMNP-TV-Z]{26})$/.exec(id);
  if (!match) return null;
  let timeMs = 0;
  for (const char of match[1].slice(0, TIME_CHARS)) timeMs = timeMs * 32 + CROCKFORD.indexOf(char);
  return timeMs;
}

export function isId(kind: IdKind, value: string): boolean {
  return value.startsWith(`${ID_PREFIXES[kind]}_`) && idTimeMs(value) !== null;
}
