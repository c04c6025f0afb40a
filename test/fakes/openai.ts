import {
  answerPieces,
  applyFault,
  type FaultPlan,
  FaultPlan as Plan,
  sleep,
  writeFrames,
  writeThenReset,
} from "./llm-faults.ts";
import { type RecordingServer, startRecordingServer } from "./recording-server.ts";

/**
 * A fake OpenAI-compatible server on 127.0.0.1: `POST /v1/chat/completions`,
 * JSON or SSE (with the usage chunk when `stream_options.include_usage` is
 * set), following a FaultPlan. The answer is the word `"chunk"` repeated, one
 * per streamed chunk, so tests can count exactly, or the step's `content`.
 */

export interface FakeOpenAi extends RecordingServer {
  faults: FaultPlan;
  /** Arrival times (epoch ms) of the chat requests, in order. */
  arrivals: number[];
}

export async function startFakeOpenAi(
  options: { latencyMs?: number; keepRequests?: boolean } = {},
): Promise<FakeOpenAi> {
  const faults = new Plan();
  const arrivals: number[] = [];
  const server = await startRecordingServer(async (request, response) => {
    if (request.method !== "POST" || !request.path.endsWith("/chat/completions")) {
      response.writeHead(404, { "Content-Type": "application/json" }).end('{"error":{"message":"not found"}}');
      return;
    }
    if (options.keepRequests !== false) arrivals.push(Date.now());
    const step = faults.next();
    if (
      applyFault(step, response, (status) => ({
        error: { message: `fake ${status}`, type: "server_error", code: null },
      }))
    )
      return;
    if (!("ok" in step)) return;
    const latencyMs = step.latencyMs ?? options.latencyMs ?? 0;
    if (latencyMs > 0) await sleep(latencyMs);
    const body = JSON.parse(request.body.toString("utf8") || "{}") as {
      model?: string;
      stream?: boolean;
      stream_options?: { include_usage?: boolean };
    };
    if (step.refuseStream && body.stream) {
      response.writeHead(400, { "Content-Type": "application/json" });
      response.end(
        JSON.stringify({
          error: { message: "streaming is not supported", type: "invalid_request_error", param: "stream", code: null },
        }),
      );
      return;
    }
    const chunks = step.chunks ?? 8;
    const { content, toolCall } = step;
    const usage = step.usage ?? { prompt: 21, completion: chunks };
    const usageBody = {
      prompt_tokens: usage.prompt,
      completion_tokens: usage.completion,
      total_tokens: usage.prompt + usage.completion,
    };
    const model = body.model ?? "deployment";
    if (!body.stream) {
      response.writeHead(200, { "Content-Type": "application/json" });
      response.end(
        JSON.stringify({
          id: "chatcmpl-fake",
          object: "chat.completion",
          created: Math.floor(Date.now() / 1000),
          model,
          choices: [
            step.toolCall
              ? {
                  index: 0,
                  message: {
                    role: "assistant",
                    content: null,
                    tool_calls: [
                      {
                        id: step.toolCall.id,
                        type: "function",
                        function: { name: step.toolCall.name, arguments: step.toolCall.arguments },
                      },
                    ],
                  },
                  finish_reason: "tool_calls",
                }
              : {
                  index: 0,
                  message: { role: "assistant", content: step.content ?? "chunk ".repeat(chunks).trim() },
                  finish_reason: "stop",
                },
          ],
          usage: usageBody,
        }),
      );
      return;
    }
    response.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    const frame = (value: unknown) => `data: ${JSON.stringify(value)}\n\n`;
    const base = {
      id: "chatcmpl-fake",
      object: "chat.completion.chunk",
      created: Math.floor(Date.now() / 1000),
      model,
    };
    function* frames() {
      yield frame({ ...base, choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] });
      if (toolCall) {
        const { id, name, arguments: args } = toolCall;
        const call = { index: 0, id, type: "function", function: { name, arguments: args } };
        yield frame({ ...base, choices: [{ index: 0, delta: { tool_calls: [call] }, finish_reason: null }] });
      } else {
        for (const piece of answerPieces(content, chunks, "chunk")) {
          yield frame({ ...base, choices: [{ index: 0, delta: { content: piece }, finish_reason: null }] });
        }
      }
      yield frame({ ...base, choices: [{ index: 0, delta: {}, finish_reason: toolCall ? "tool_calls" : "stop" }] });
      if (body.stream_options?.include_usage) yield frame({ ...base, choices: [], usage: usageBody });
      yield "data: [DONE]\n\n";
    }
    if (step.stallAfterChunks !== undefined) {
      const sent = [...frames()].slice(0, 1 + step.stallAfterChunks).join("");
      response.write(sent);
      return;
    }
    if (step.resetAfterChunks !== undefined) {
      writeThenReset(response, frames(), 1 + step.resetAfterChunks);
      return;
    }
    await writeFrames(response, frames(), step);
  }, options);
  return Object.assign(server, { faults, arrivals });
}
