/**
 * The invariants bench/router/soak.ts judges a run by: what the callers were answered, the usage rows in D1,
 * the budgets' books in WorkspaceLimiter, the billing and fallback events, and the breakers, each against
 * what the fake upstreams did. Prints one line per invariant and the first violations of each.
 */

import { writeFileSync } from "node:fs";
import { costUsd } from "../../src/llm/prices.ts";
import type { FaultStep } from "../../test/fakes/llm-faults.ts";
import { checkBooks } from "./soak-books.ts";
import {
  type Attempt,
  allEvents,
  type CallRecord,
  describe,
  get,
  type Invariant,
  isOk,
  isUnfinishedAttemptRow,
  MODEL_OF,
  near,
  type SoakWorkspace,
  sleep,
  type UsageRow,
  usageRows,
} from "./soak-lib.ts";

export async function checkInvariants(input: {
  baseUrl: string;
  persistDir: string;
  workspaces: SoakWorkspace[];
  records: CallRecord[];
  attempts: () => Attempt[];
  settleTimeoutMs: number;
}): Promise<{ failed: boolean }> {
  const { baseUrl, workspaces, records } = input;
  const budgeted = workspaces.filter((workspace) => Object.values(workspace.budgets).some((limit) => limit !== null));

  // Settled: the fakes received nothing for 5 s (calls whose clients left go on in the Worker), and nothing is
  // held in any budgeted workspace's limiter (leases closed, reservations settled).
  const deadline = Date.now() + input.settleTimeoutMs;
  let held: string[] = [];
  let quietSince = Date.now();
  let received = input.attempts().length;
  for (;;) {
    const now = input.attempts().length;
    if (now !== received) {
      received = now;
      quietSince = Date.now();
    }
    held = [];
    for (const workspace of budgeted) {
      const status = await get(baseUrl, "/api/v1/budgets", workspace.headers);
      for (const period of ["daily", "monthly"] as const)
        if (status[period].reserved_tokens !== 0 || status[period].reserved_cost_usd !== 0)
          held.push(`${workspace.name} ${period}: ${status[period].reserved_tokens} tokens held`);
    }
    if ((held.length === 0 && Date.now() - quietSince >= 5_000) || Date.now() > deadline) break;
    await sleep(1_000);
  }
  console.log(
    `settled ${((Date.now() - deadline + input.settleTimeoutMs) / 1000).toFixed(1)} s after the last answer${held.length ? `, still held: ${held.join("; ")}` : ""}`,
  );
  await sleep(2_000); // usage rows are written in the background after the settlement
  const attempts = input.attempts();

  const rows = usageRows(input.persistDir);
  if (process.env.SOAK_DUMP) {
    writeFileSync(process.env.SOAK_DUMP, JSON.stringify({ workspaces, records, attempts, rows }, null, 1));
    console.log(`run written to ${process.env.SOAK_DUMP}`);
  }
  const rowsOf = new Map<string, UsageRow[]>();
  for (const row of rows) {
    const key = row.request_id ?? "";
    rowsOf.set(key, [...(rowsOf.get(key) ?? []), row]);
  }
  const attemptsOf = new Map<number, Attempt[]>();
  for (const attempt of attempts) attemptsOf.set(attempt.callId, [...(attemptsOf.get(attempt.callId) ?? []), attempt]);

  const invariants: Invariant[] = [];
  const invariant = (name: string): Invariant => {
    const entry = { name, checked: 0, violations: [] };
    invariants.push(entry);
    return entry;
  };
  const answered = records.filter((record) => !record.cancelled && !record.clientError);

  // 1. Answers: no 5xx but the documented 503; every error a problem+json carrying OpenAI's error object.
  const statuses = invariant("no 5xx but 503; errors are problem+json with OpenAI's error object");
  for (const record of answered) {
    statuses.checked++;
    if (record.status >= 500 && record.status !== 503)
      statuses.violations.push(`${record.requestId}: ${record.status}`);
    if (record.status !== 200) {
      const error = record.body?.error;
      const shaped =
        record.contentType.startsWith("application/problem+json") &&
        error &&
        typeof error.message === "string" &&
        typeof error.type === "string" &&
        "code" in error &&
        "param" in error;
      if (!shaped) statuses.violations.push(`${record.requestId}: ${record.status} ${JSON.stringify(record.body)}`);
      // Every 429 carries Retry-After; a 503 whose every target asked for a wait says the soonest of them.
      if ((record.status === 429 || record.status === 503) && !record.retryAfter)
        statuses.violations.push(`${record.requestId}: ${record.status} without Retry-After`);
      const tried = attemptsOf.get(record.id) ?? [];
      const lastAt = new Map<string, FaultStep>();
      for (const attempt of tried) lastAt.set(attempt.provider, attempt.step);
      const waits = [...lastAt.values()].map((step) => {
        const headers = ("status" in step && step.headers) || {};
        if (headers["Retry-After"]) return Number(headers["Retry-After"]);
        if (headers["retry-after-ms"]) return Number(headers["retry-after-ms"]) / 1000;
        return null;
      });
      if (record.body?.reason === "all_providers_failed" && waits.length > 0 && waits.every((wait) => wait !== null)) {
        const soonest = Math.ceil(Math.min(...(waits as number[])));
        if (Number(record.retryAfter) !== soonest)
          statuses.violations.push(
            `${record.requestId}: 503 Retry-After ${record.retryAfter}, the targets asked for ${waits.join(", ")} s; ${describe(tried)}`,
          );
      }
    }
  }
  for (const record of records)
    if (record.clientError) statuses.violations.push(`${record.requestId}: client error ${record.clientError}`);

  // 2. One usage row per charged call, with the figures the fake reported for the attempt that served it.
  const usage = invariant("each answered call: one usage row = the serving attempt's reported usage and price");
  const timedOut = invariant("timed-out attempts (hangs) each charged once, as `:timed-out:` rows");
  const interrupted = invariant("attempts broken mid-answer before the call's answer, as `:interrupted:` rows, told");
  for (const record of answered) {
    const own = rowsOf.get(record.requestId) ?? [];
    const main = own.filter((row) => !isUnfinishedAttemptRow(row));
    // The soak's whole calls are short (max_tokens 32: asked whole, never read from a stream), and a caller's stream
    // broken after its first event is the call's own row: an interrupted row is a stream that broke before it.
    const interruptedRows = own.filter((row) => row.charge_key.includes(":interrupted:")).length;
    const toldInterrupted = record.xMgx?.interrupted_attempts ?? record.body?.interrupted_attempts;
    interrupted.checked++;
    if (interruptedRows > 0 && (toldInterrupted?.length ?? 0) !== interruptedRows && !record.streamError && record.xMgx)
      interrupted.violations.push(
        `${record.requestId}: ${interruptedRows} interrupted rows, answer tells ${toldInterrupted?.length ?? 0}`,
      );
    const tried = attemptsOf.get(record.id) ?? [];
    // A hang times out; so does a stream stalled mid-answer, unless its deltas were passed on and it ended the call.
    const hangs = tried.filter(
      (attempt, index) =>
        "hang" in attempt.step ||
        (record.stream &&
          isOk(attempt.step) &&
          attempt.step.stallAfterChunks !== undefined &&
          (index < tried.length - 1 || record.status !== 200)),
    ).length;
    const timedOutRows = own.length - main.length - interruptedRows;
    timedOut.checked++;
    const told = record.xMgx?.timed_out_attempts ?? record.body?.timed_out_attempts;
    if (timedOutRows > 0 && (told?.length ?? 0) !== timedOutRows && !record.streamError && record.xMgx)
      timedOut.violations.push(
        `${record.requestId}: ${timedOutRows} timed-out rows, answer tells ${told?.length ?? 0}`,
      );
    if (timedOutRows !== hangs)
      timedOut.violations.push(
        `${record.requestId}: ${hangs} hung attempts, ${timedOutRows} timed-out rows; ${describe(tried)}`,
      );
    if (record.status !== 200) {
      usage.checked++;
      if (main.length !== 0)
        usage.violations.push(`${record.requestId}: answered ${record.status} but charged ${main.length} rows`);
      continue;
    }
    usage.checked++;
    if (main.length !== 1) {
      usage.violations.push(`${record.requestId}: answered 200, ${main.length} usage rows`);
      continue;
    }
    const row = main[0];
    const last = tried.at(-1);
    if (record.xMgx && (record.xMgx.attempts !== tried.length || record.xMgx.provider !== last?.provider))
      usage.violations.push(
        `${record.requestId}: answer says ${record.xMgx.attempts} attempts, served by ${record.xMgx.provider}; fakes saw ${describe(tried)}`,
      );
    const expectedCost = costUsd(row.provider, row.model, row);
    if (!near(row.cost_usd, expectedCost))
      usage.violations.push(`${record.requestId}: row cost ${row.cost_usd}, price table says ${expectedCost}`);
    if (record.xMgx && !near(record.xMgx.cost_usd, row.cost_usd))
      usage.violations.push(`${record.requestId}: answer cost ${record.xMgx.cost_usd}, row ${row.cost_usd}`);
    if (
      record.usage &&
      (record.usage.prompt_tokens !== row.prompt_tokens || record.usage.completion_tokens !== row.completion_tokens)
    )
      usage.violations.push(
        `${record.requestId}: answer usage ${JSON.stringify(record.usage)}, row ${row.prompt_tokens}+${row.completion_tokens}`,
      );
    // The fakes cut or stall only streams; a whole answer of such a step is whole.
    const complete =
      last &&
      isOk(last.step) &&
      (!record.stream || (last.step.resetAfterChunks === undefined && last.step.stallAfterChunks === undefined)) &&
      last.provider === row.provider;
    if (complete && record.done && !record.streamError) {
      const reported = isOk(last.step) ? last.step.usage : undefined;
      if (
        reported &&
        (row.prompt_tokens !== reported.prompt || row.completion_tokens !== reported.completion || row.estimated)
      )
        usage.violations.push(
          `${record.requestId}: ${row.provider} reported ${reported.prompt}+${reported.completion}, row ${row.prompt_tokens}+${row.completion_tokens}${row.estimated ? " estimated" : ""}`,
        );
    } else if (!row.estimated && !complete) {
      usage.violations.push(
        `${record.requestId}: served by a cut attempt but not estimated (row ${row.prompt_tokens}+${row.completion_tokens}, ${record.deltas} deltas read${record.streamError ? `, stream error ${JSON.stringify(record.streamError)}` : ""}); ${describe(tried)}`,
      );
    }
  }
  for (const row of rows) {
    if (!row.request_id?.startsWith("soak-")) usage.violations.push(`row ${row.charge_key} of no soak call`);
  }

  // 3. Client-cancelled calls: charged once at most, and once when the client had read part of the answer.
  const cancelled = invariant("cancelled calls charged at most once (once if a delta was read)");
  for (const record of records.filter((entry) => entry.cancelled)) {
    cancelled.checked++;
    const main = (rowsOf.get(record.requestId) ?? []).filter((row) => !isUnfinishedAttemptRow(row));
    if (main.length > 1 || (record.deltas > 0 && main.length !== 1))
      cancelled.violations.push(`${record.requestId}: ${record.deltas} deltas read, ${main.length} usage rows`);
  }

  // 4, 5. The books and the billing events (soak-books.ts).
  await checkBooks({ baseUrl, workspaces, budgeted, records, rows, attemptsOf, held, invariant });
  // 6. Every fallback told: a call whose attempts moved between providers has that many fallback events at least.
  const fallbacks = invariant("every fallback between providers has an llm.provider.fallback event");
  const fallbackEvents = new Map<string, string[]>();
  for (const workspace of workspaces)
    for (const event of await allEvents(baseUrl, workspace.headers, "llm.provider.fallback"))
      fallbackEvents.set(event.request_id, [...(fallbackEvents.get(event.request_id) ?? []), event.data.reason]);
  for (const record of records) {
    const tried = attemptsOf.get(record.id) ?? [];
    const named = record.model === "auto" ? undefined : record.model.startsWith("anthropic:") ? "anthropic" : "openai";
    const first = named ?? workspaces[record.workspace].chain[0].provider;
    let switches = tried.length > 0 && tried[0].provider !== first ? 1 : 0;
    for (let index = 1; index < tried.length; index++)
      if (tried[index].provider !== tried[index - 1].provider) switches++;
    if (switches === 0) continue;
    fallbacks.checked++;
    const reasons = fallbackEvents.get(record.requestId) ?? [];
    if (reasons.length < switches)
      fallbacks.violations.push(`${record.requestId}: ${switches} switches, ${reasons.length} events`);
    // The reason follows the failure that moved the call on: a 429 `rate_limit`, a timeout `performance`.
    const unmatched = [...reasons];
    for (let index = 1; index < tried.length; index++) {
      if (tried[index].provider === tried[index - 1].provider) continue;
      const step = tried[index - 1].step;
      const expected =
        "status" in step && step.status === 429
          ? "rate_limit"
          : "hang" in step || (isOk(step) && step.stallAfterChunks !== undefined)
            ? "performance"
            : "error_rate";
      const found = unmatched.indexOf(expected);
      if (found >= 0) unmatched.splice(found, 1);
      else
        fallbacks.violations.push(
          `${record.requestId}: moved on after ${JSON.stringify(step)}, no \`${expected}\` fallback among ${JSON.stringify(reasons)}; ${describe(tried)}`,
        );
    }
  }

  // 6b. Every failed attempt told once: at least the attempts the fake failed outright, at most those made.
  const errors = invariant("each failed attempt has one llm.provider.error event");
  const errorEvents = new Map<string, number>();
  for (const workspace of workspaces)
    for (const event of await allEvents(baseUrl, workspace.headers, "llm.provider.error"))
      errorEvents.set(event.request_id, (errorEvents.get(event.request_id) ?? 0) + 1);
  for (const record of records) {
    const tried = attemptsOf.get(record.id) ?? [];
    const failedOutright = tried.filter((attempt) => !isOk(attempt.step)).length;
    const told = errorEvents.get(record.requestId) ?? 0;
    if (tried.length === 0 && told === 0) continue;
    errors.checked++;
    if (told < failedOutright || told > tried.length)
      errors.violations.push(
        `${record.requestId}: ${tried.length} attempts, ${failedOutright} failed outright, ${told} events; ${describe(tried)}`,
      );
  }

  // 7. Breakers as the fakes saw them: no more calls counted than the fake received in the last minute.
  const breakers = invariant("breaker figures consistent with the fakes' traffic");
  const providers = await get(baseUrl, "/api/v1/providers", workspaces[0].headers);
  const now = Date.now();
  for (const provider of providers.data) {
    for (const model of provider.models) {
      if (MODEL_OF[provider.provider] !== model.model) continue;
      breakers.checked++;
      const received = attempts.filter(
        (attempt) => attempt.provider === provider.provider && attempt.at > now - 61_000,
      );
      const failing = received.filter((attempt) => !isOk(attempt.step)).length;
      console.log(
        `  breaker ${provider.provider}:${model.model} ${model.state}, ${model.calls_last_minute} calls/min (fake saw ${received.length}, ${failing} faults), error rate ${model.error_rate}, ${model.consecutive_failures} consecutive`,
      );
      if (model.calls_last_minute > received.length)
        breakers.violations.push(
          `${provider.provider}: ${model.calls_last_minute} calls counted, fake received ${received.length}`,
        );
    }
  }

  const byStatus = new Map<string, number>();
  for (const record of records) {
    const key = record.cancelled
      ? "cancelled"
      : record.status === 200 && record.streamError
        ? "200 cut"
        : String(record.status);
    byStatus.set(key, (byStatus.get(key) ?? 0) + 1);
  }
  const codes = new Map<string, number>();
  for (const record of answered.filter((entry) => entry.status !== 200)) {
    const key = `${record.status} ${record.body?.code} (${record.body?.error?.type}/${record.body?.error?.code})`;
    codes.set(key, (codes.get(key) ?? 0) + 1);
  }
  console.log(
    `answers: ${JSON.stringify(Object.fromEntries(byStatus))}; errors: ${JSON.stringify(Object.fromEntries(codes))}`,
  );
  console.log(`fake attempts: ${attempts.length}; usage rows: ${rows.length}`);
  let failed = false;
  for (const entry of invariants) {
    const ok = entry.violations.length === 0;
    failed ||= !ok;
    console.log(
      `${ok ? "PASS" : "FAIL"} ${entry.name} (${entry.checked} checked${ok ? "" : `, ${entry.violations.length} violations`})`,
    );
    for (const violation of entry.violations.slice(0, 8)) console.log(`    ${violation}`);
  }
  return { failed };
}
