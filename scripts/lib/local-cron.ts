/**
 * Cron triggers under `npm run dev`. wrangler dev never fires a Worker's cron
 * triggers by itself ("Miniflare does not currently trigger scheduled Workers
 * automatically"); started with `--test-scheduled`, it runs one when asked on
 * GET /cdn-cgi/local/scheduled?cron=…. This fires each trigger of
 * wrangler.toml at the minutes its expression names, in UTC as Cloudflare
 * does, so parked events, audit anchors and retention run locally as they
 * would deployed.
 *
 * Expressions: five fields (minute hour day-of-month month day-of-week) of
 * numbers, `*`, ranges `a-b`, steps `*\/n` `a-b/n` `a/n` and lists. The
 * day-of-week field must be `*`: cron dialects number weekdays differently
 * (Sunday is 0 in Unix cron, 1 in Quartz's), and a guess here could fire a
 * job on the wrong day. An expression this cannot read stops `npm run dev`
 * before it starts wrangler, so it is fixed rather than missed.
 */

export const LOCAL_SCHEDULED_PATH = "/cdn-cgi/local/scheduled";

const FIELDS = [
  { name: "minute", min: 0, max: 59, of: (at: Date) => at.getUTCMinutes() },
  { name: "hour", min: 0, max: 23, of: (at: Date) => at.getUTCHours() },
  { name: "day of month", min: 1, max: 31, of: (at: Date) => at.getUTCDate() },
  { name: "month", min: 1, max: 12, of: (at: Date) => at.getUTCMonth() + 1 },
] as const;

/** The crons of wrangler.toml's top-level `[triggers]` (not an environment's); throws on one it cannot read. */
export function cronTriggers(wranglerToml: string): string[] {
  const section = /^\[triggers\][^\S\n]*\n((?:(?!\[).*\n?)*)/m.exec(wranglerToml)?.[1] ?? "";
  const list = /^crons\s*=\s*(\[.*\])\s*$/m.exec(section)?.[1];
  const triggers = list ? (JSON.parse(list) as string[]) : [];
  for (const cron of triggers) cronMatcher(cron);
  return triggers;
}

/** Whether `expression` names the UTC minute of `at`. Throws on what it cannot read (see above). */
export function cronMatcher(expression: string): (at: Date) => boolean {
  const parts = expression.trim().split(/\s+/);
  if (parts.length !== 5) throw new Error(`cron "${expression}": expected 5 fields, found ${parts.length}`);
  if (parts[4] !== "*") throw new Error(`cron "${expression}": only "*" is supported for the day of week locally`);
  const allowed = FIELDS.map((field, index) => fieldValues(expression, parts[index], field));
  return (at) => FIELDS.every((field, index) => allowed[index].has(field.of(at)));
}

function fieldValues(expression: string, text: string, field: { name: string; min: number; max: number }): Set<number> {
  const values = new Set<number>();
  const fail = (): never => {
    throw new Error(`cron "${expression}": cannot read ${field.name} "${text}" (${field.min}-${field.max})`);
  };
  const number = (digits: string) => {
    if (!/^\d+$/.test(digits)) fail();
    const value = Number(digits);
    if (value < field.min || value > field.max) fail();
    return value;
  };
  for (const part of text.split(",")) {
    const [range, stepText, extra] = part.split("/");
    if (extra !== undefined) fail();
    const step = stepText === undefined ? 1 : number(stepText) || fail();
    let [from, to] = [field.min, field.max];
    if (range !== "*") {
      const [first, last, more] = range.split("-");
      if (more !== undefined) fail();
      from = number(first);
      // `a/n` runs from a to the field's end; a bare `a` is that value alone.
      to = last !== undefined ? number(last) : stepText !== undefined ? field.max : from;
      if (to < from) fail();
    }
    for (let value = from; value <= to; value += step) values.add(value);
  }
  return values;
}

export interface LocalCronOptions {
  baseUrl: string;
  triggers: string[];
  log: (line: string) => void;
}

/** Fires the triggers `at` names (its minute), each once; resolves when wrangler dev has answered for all. */
export async function fireDueTriggers(options: LocalCronOptions, at: Date): Promise<string[]> {
  const due = options.triggers.filter((cron) => cronMatcher(cron)(at));
  await Promise.all(
    due.map(async (cron) => {
      const query = new URLSearchParams({ cron, time: String(at.getTime()) });
      try {
        const response = await fetch(`${options.baseUrl}${LOCAL_SCHEDULED_PATH}?${query}`);
        const outcome = await response.text();
        if (!response.ok) options.log(`cron "${cron}": the scheduled handler answered ${response.status} ${outcome}`);
      } catch (error) {
        options.log(`cron "${cron}": wrangler dev did not answer (${error instanceof Error ? error.message : error})`);
      }
    }),
  );
  return due;
}

/** Fires each trigger at the start of every minute it names, until the returned function is called. */
export function startLocalCron(options: LocalCronOptions): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  // A timer may fire a little early; each minute is fired once all the same.
  let lastFiredMinuteMs = Math.floor(Date.now() / 60_000) * 60_000;
  const schedule = () => {
    const nowMs = Date.now();
    const nextMinuteMs = Math.max(Math.floor(nowMs / 60_000) * 60_000 + 60_000, lastFiredMinuteMs + 60_000);
    timer = setTimeout(() => {
      lastFiredMinuteMs = nextMinuteMs;
      void fireDueTriggers(options, new Date(nextMinuteMs));
      schedule();
    }, nextMinuteMs - nowMs);
  };
  schedule();
  return () => clearTimeout(timer);
}
