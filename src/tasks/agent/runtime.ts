import { activeTraceId } from "../../events/index.ts";
import type { Logger } from "../../lib/logger.ts";
import { sleepMs } from "../../lib/sleep.ts";
import { BudgetExhaustedError } from "../../llm/errors.ts";
import { type ChargedCall, type ChatMessage, type ChatResult, LlmError, type LlmRouter } from "../../llm/types.ts";
import type { TaskFiles } from "../artifacts.ts";
import { CancelledError } from "../cancellation.ts";
import { DEFAULT_MAX_STEPS, MAX_STEPS_CAP } from "../config.ts";
import type { EventChain } from "../events.ts";
import type { TaskRow } from "../views.ts";
import { EMPTY_ANSWER_PROMPT, systemPrompt, taskPrompt } from "./prompts.ts";
import { runTool, TOOL_DEFINITIONS, type ToolEnv, writeFile } from "./tools.ts";

/**
 * The agent loop: LLM turn → tool calls → LLM turn … until `finish`, a final
 * answer without tool calls, or the step limit. Cancellation is checked
 * before every turn (and aborts a call in flight through `signal`); the
 * deadline bounds the whole run. Usage is tallied as it goes, so a run that
 * fails still reports what it spent.
 */

/** Where the agent's final report goes, so every run leaves a readable result. */
export const REPORT_PATH = "REPORT.md";

/**
 * How long a run waits in all for budget room that calls in flight hold
 * (budget_held) before it gives the task back to the queue. Such a refusal
 * clears within seconds, as those calls settle; sent back to the queue, each
 * one would spend one of the task's few deliveries, and a busy workspace near
 * its limit would dead-letter tasks that only had to wait their turn.
 */
export const BUDGET_HELD_WAIT_LIMIT_MS = 60_000;
/** A wait that leaves the run less than this for the call itself is not worth it. */
const MIN_CALL_TIME_AFTER_WAIT_MS = 10_000;

export class TaskTimeoutError extends Error {
  constructor(seconds: number) {
    super(`The run exceeded its ${seconds} s timeout.`);
    this.name = "TaskTimeoutError";
  }
}

export interface AgentRunInput {
  task: Pick<TaskRow, "id" | "workspaceId" | "type" | "title" | "description" | "projectId" | "agentConfig">;
  runId: string;
  agentId: string;
  router: LlmRouter;
  files: TaskFiles;
  events: EventChain;
  signal: AbortSignal;
  deadlineMs: number;
  timeoutSeconds: number;
  /**
   * Must the run stop: a cancel requested elsewhere (CancelledError), or its task taken over by another delivery
   * (SupersededError)? Polled before each turn (the caller throttles it); null: go on.
   */
  stopRequested: () => Promise<Error | null>;
  logger: Logger;
}

export interface AgentOutcome {
  status: "success" | "partial_success";
  summary: string;
  steps: number;
  artifactIds: string[];
}

export class AgentRun {
  promptTokens = 0;
  completionTokens = 0;
  costUsd = 0;
  provider: string | null = null;
  model: string | null = null;
  simulated = false;
  steps = 0;
  readonly #input: AgentRunInput;

  constructor(input: AgentRunInput) {
    this.#input = input;
  }

  async run(): Promise<AgentOutcome> {
    const { task, runId, agentId, events } = this.#input;
    const config = task.agentConfig ?? {};
    const maxSteps = Math.min(MAX_STEPS_CAP, positiveInt(config.max_steps) ?? DEFAULT_MAX_STEPS);
    const toolEnv: ToolEnv = {
      files: this.#input.files,
      events,
      workspaceId: task.workspaceId,
      taskId: task.id,
      runId,
      agentId,
    };
    // The run's own events take this from its trace; budget events are stamped in the WorkspaceLimiter, which
    // has no trace of its own, so the router must be told it with each call.
    const correlationId = activeTraceId(this.#input.logger);
    const messages: ChatMessage[] = [
      { role: "system", content: systemPrompt(task.type) },
      { role: "user", content: taskPrompt(task) },
    ];

    let emptyAnswers = 0;
    while (this.steps < maxSteps) {
      await this.#checkpoint();
      this.steps++;
      const result = await this.#chat(
        {
          messages,
          tools: TOOL_DEFINITIONS,
          ...(typeof config.model === "string" ? { model: config.model } : {}),
          ...(typeof config.temperature === "number" ? { temperature: config.temperature } : {}),
          ...(positiveInt(config.max_tokens) ? { max_tokens: positiveInt(config.max_tokens) } : {}),
        },
        {
          workspaceId: task.workspaceId,
          taskId: task.id,
          runId,
          agentId,
          ...(correlationId ? { correlationId } : {}),
          chargeKey: `${runId}:${this.steps}`,
          emitEvent: (event) => events.emit(event),
          signal: this.#input.signal,
          // A turn that writes a long file takes a model minutes: timed out as a stall, it was asked again.
          wholeFromStream: true,
          deadlineMs: this.#input.deadlineMs,
        },
      );
      this.#count(result);
      const toolCalls = result.message.tool_calls ?? [];
      const empty = toolCalls.length === 0 && !result.message.content?.trim();
      // An empty turn is not part of the conversation: providers refuse an assistant message without content.
      if (!empty) messages.push(result.message);
      events.emit({
        event_type: "agent.message",
        workspace_id: task.workspaceId,
        task_id: task.id,
        run_id: runId,
        agent_id: agentId,
        data: {
          task_id: task.id,
          agent_id: agentId,
          role: "assistant",
          message: result.message.content ?? "",
          tokens: result.usage.completion_tokens,
          ...(toolCalls.length > 0 ? { metadata: { tools_called: toolCalls.map((call) => call.function.name) } } : {}),
          step: this.steps,
          provider: result.provider,
          model: result.model,
          simulated: result.simulated,
        },
      });

      if (empty) {
        // Neither text nor a tool call (Claude sometimes ends a turn so after tool results): nothing is finished.
        // The model is asked once to go on; a second empty answer in a row ends the run short of success.
        if (++emptyAnswers > 1)
          return this.#finish("The model stopped answering before it finished.", "partial_success");
        messages.push({ role: "user", content: EMPTY_ANSWER_PROMPT });
        continue;
      }
      emptyAnswers = 0;
      if (toolCalls.length === 0) return this.#finish(result.message.content ?? "", "success");
      // The calls of a turn are parallel: a `finish` among them ends the run once the turn's other calls have run,
      // whatever their order. Ended at once, a write_file the model put after it was never made (nor announced).
      let finished: { summary: string; status: AgentOutcome["status"] } | undefined;
      for (const call of toolCalls) {
        await this.#checkpoint();
        let args: Record<string, unknown> = {};
        try {
          const parsed = JSON.parse(call.function.arguments || "{}");
          if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) args = parsed;
        } catch {
          args = { raw: call.function.arguments };
        }
        events.emit({
          event_type: "tool.call",
          workspace_id: task.workspaceId,
          task_id: task.id,
          run_id: runId,
          agent_id: agentId,
          data: {
            tool_id: call.id,
            tool_name: call.function.name,
            arguments: redactContent(args),
            task_id: task.id,
            agent_id: agentId,
          },
        });
        const startedAt = performance.now();
        const outcome = await runTool(call.function.name, call.function.arguments, toolEnv);
        const durationMs = Math.max(0, performance.now() - startedAt);
        events.emit({
          event_type: "tool.result",
          workspace_id: task.workspaceId,
          task_id: task.id,
          run_id: runId,
          agent_id: agentId,
          data: {
            tool_id: call.id,
            tool_name: call.function.name,
            status: outcome.status,
            ...(outcome.status === "success"
              ? { result: summariseResult(outcome.result) }
              : { error: outcome.error, code: outcome.code }),
            duration_ms: durationMs,
            task_id: task.id,
          },
        });
        messages.push({
          role: "tool",
          tool_call_id: call.id,
          name: call.function.name,
          content: JSON.stringify(
            outcome.status === "success" ? outcome.result : { error: outcome.error, status: outcome.code },
          ),
        });
        if (outcome.status === "success" && outcome.finish) finished ??= outcome.finish;
      }
      if (finished) return this.#finish(finished.summary, finished.status);
    }
    return this.#finish(`Stopped after ${maxSteps} steps without finishing.`, "partial_success");
  }

  /**
   * Everything a call was charged counts in the run's figures: attempts that timed out at the provider or broke
   * mid-answer, and a failed call's charges (cancelled while the provider had it) as well as an answer's. A call
   * refused for room that calls in flight hold waits and asks again (BUDGET_HELD_WAIT_LIMIT_MS).
   */
  async #chat(...args: Parameters<LlmRouter["chat"]>): Promise<ChatResult> {
    let waitedMs = 0;
    for (;;) {
      try {
        const result = await this.#input.router.chat(...args);
        for (const charge of result.timed_out_attempts ?? []) this.#count(charge);
        for (const charge of result.interrupted_attempts ?? []) this.#count(charge);
        return result;
      } catch (error) {
        if (error instanceof LlmError) for (const charge of error.charged ?? []) this.#count(charge);
        // A call that was charged (attempts that timed out or broke before the room ran short) settled its key: asked
        // again under it, it would reserve nothing and count nothing. The run ends, retryable, and its retry asks anew.
        const charged = error instanceof LlmError && (error.charged?.length ?? 0) > 0;
        const waitMs = charged ? undefined : this.#budgetHeldWaitMs(error, waitedMs);
        if (waitMs === undefined) throw error;
        this.#input.logger.info("llm call waits for budget room that calls in flight hold", {
          task_id: this.#input.task.id,
          wait_ms: waitMs,
        });
        // A refused call reserved nothing: asked again with the same charge key, it is still charged once.
        await sleepMs(waitMs, this.#input.signal).catch(() => {});
        waitedMs += waitMs;
        await this.#checkpoint();
      }
    }
  }

  /** How long to wait before asking again for room that calls in flight hold; undefined to give up. */
  #budgetHeldWaitMs(error: unknown, waitedMs: number): number | undefined {
    if (!(error instanceof BudgetExhaustedError) || !error.held || error.retryAfterMs === undefined) return undefined;
    const waitMs = error.retryAfterMs;
    if (waitedMs + waitMs > BUDGET_HELD_WAIT_LIMIT_MS) return undefined;
    // Room for the call after the wait, or the queue's retry serves the task better than a timeout.
    return Date.now() + waitMs + MIN_CALL_TIME_AFTER_WAIT_MS < this.#input.deadlineMs ? waitMs : undefined;
  }

  #count({ usage, cost_usd, provider, model, simulated }: ChargedCall): void {
    this.promptTokens += usage.prompt_tokens;
    this.completionTokens += usage.completion_tokens;
    this.costUsd += cost_usd;
    this.provider = provider;
    this.model = model;
    this.simulated ||= simulated;
  }

  async #checkpoint(): Promise<void> {
    const { signal, deadlineMs, timeoutSeconds } = this.#input;
    if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new CancelledError();
    if (Date.now() >= deadlineMs) throw new TaskTimeoutError(timeoutSeconds);
    const stop = await this.#input.stopRequested();
    if (stop) throw stop;
  }

  async #finish(summary: string, status: AgentOutcome["status"]): Promise<AgentOutcome> {
    const { task, runId, agentId, files, events } = this.#input;
    // A REPORT.md the agent wrote itself this run is its report (a task may ask for one): replaced by the summary,
    // what the agent wrote was lost.
    if (files.written().some((row) => row.path === REPORT_PATH))
      return { status, summary, steps: this.steps, artifactIds: files.ids() };
    const report = `# ${task.title}\n\n${summary.trim() || "(no summary)"}\n`;
    try {
      await writeFile(
        { path: REPORT_PATH, content: report },
        { files, events, workspaceId: task.workspaceId, taskId: task.id, runId, agentId },
      );
    } catch (error) {
      this.#input.logger.warn("the run's report could not be saved", { error });
    }
    return { status, summary, steps: this.steps, artifactIds: files.ids() };
  }
}

function positiveInt(value: unknown): number | undefined {
  return typeof value === "number" && Number.isInteger(value) && value > 0 ? value : undefined;
}

/** How much of arguments that are not JSON a tool.call event shows. */
const RAW_ARGUMENTS_SHOWN_CHARS = 200;

/**
 * File content can be large: events carry its size, not the content itself. So do arguments that are not JSON, as
 * those of a write_file cut off by max_tokens are (its whole content but the end): their start, then their size.
 */
function redactContent(args: Record<string, unknown>): Record<string, unknown> {
  if (typeof args.raw === "string" && args.raw.length > RAW_ARGUMENTS_SHOWN_CHARS) {
    const shown = args.raw.slice(0, RAW_ARGUMENTS_SHOWN_CHARS).replace(/[\ud800-\udbff]$/, "");
    return { ...args, raw: `${shown}… <${new TextEncoder().encode(args.raw).byteLength} bytes>` };
  }
  if (typeof args.content !== "string") return args;
  return { ...args, content: `<${new TextEncoder().encode(args.content).byteLength} bytes>` };
}

function summariseResult(result: Record<string, unknown>): Record<string, unknown> {
  if (typeof result.content !== "string") return result;
  return { ...result, content: `<${result.content.length} characters>` };
}
