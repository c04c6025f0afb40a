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
 * A fake Anthropic Messages server on 127.0.0.1: `POST /v1/messages`, JSON or
 * the event stream (message_start … message_stop), following a FaultPlan.
 * A 529 `overloaded_error` is Anthropic's own busy signal. A request that
 * forces a tool (`tool_choice: {type: "tool"}`) is answered with that tool's
 * call, its input the step's `content` parsed as JSON, streamed as
 * `input_json_delta` pieces.
 */

export interface FakeAnthropic extends RecordingServer {
  faults: FaultPlan;
  arrivals: number[];
}

export async function startFakeAnthropic(): Promise<FakeAnthropic> {
  const faults = new Plan();
  const arrivals: number[] = [];
  const server = await startRecordingServer(async (request, response) => {
    if (request.method !== "POST" || request.path !== "/v1/messages") {
      response.writeHead(404, { "Content-Type": "application/json" }).end('{"type":"error"}');
      return;
    }
    arrivals.push(Date.now());
    const step = faults.next();
    const errorBody = (status: number) => ({
      type: "error",
      error: { type: status === 529 ? "overloaded_error" : "api_error", message: `fake ${status}` },
    });
    if (applyFault(step, response, errorBody)) return;
    if (!("ok" in step)) return;
    if (step.latencyMs) await sleep(step.latencyMs);
    const body = JSON.parse(request.body.toString("utf8") || "{}") as {
      model?: string;
      stream?: boolean;
      tool_choice?: { type: string; name?: string };
    };
    const chunks = step.chunks ?? 4;
    const content = step.content;
    const usage = step.usage ?? { prompt: 30, completion: chunks };
    const text = step.content ?? "claude ".repeat(chunks).trim();
    const forcedTool = body.tool_choice?.type === "tool" ? body.tool_choice.name : undefined;
    const toolInput = step.content ?? "{}";
    const stopReason = forcedTool ? "tool_use" : "end_turn";
    if (!body.stream) {
      response.writeHead(200, { "Content-Type": "application/json" });
      response.end(
        JSON.stringify({
          id: "msg_fake",
          type: "message",
          role: "assistant",
          model: body.model,
          content: forcedTool
            ? [{ type: "tool_use", id: "toolu_fake", name: forcedTool, input: JSON.parse(toolInput) }]
            : [{ type: "text", text }],
          stop_reason: stopReason,
          usage: { input_tokens: usage.prompt, output_tokens: usage.completion },
        }),
      );
      return;
    }
    response.writeHead(200, { "Content-Type": "text/event-stream" });
    const event = (type: string, data: unknown) =>
      `event: ${type}\ndata: ${JSON.stringify({ type, ...(data as object) })}\n\n`;
    function* frames() {
      yield event("message_start", {
        message: { id: "msg_fake", usage: { input_tokens: usage.prompt, output_tokens: 1 } },
      });
      if (forcedTool) {
        yield event("content_block_start", {
          index: 0,
          content_block: { type: "tool_use", id: "toolu_fake", name: forcedTool, input: {} },
        });
        const size = Math.ceil(toolInput.length / chunks);
        for (let offset = 0; offset < toolInput.length; offset += size) {
          yield event("content_block_delta", {
            index: 0,
            delta: { type: "input_json_delta", partial_json: toolInput.slice(offset, offset + size) },
          });
        }
      } else {
        yield event("content_block_start", { index: 0, content_block: { type: "text", text: "" } });
        for (const piece of answerPieces(content, chunks, "claude")) {
          yield event("content_block_delta", { index: 0, delta: { type: "text_delta", text: piece } });
        }
      }
      yield event("content_block_stop", { index: 0 });
      yield event("message_delta", { delta: { stop_reason: stopReason }, usage: { output_tokens: usage.completion } });
      yield event("message_stop", {});
    }
    if (step.stallAfterChunks !== undefined) {
      response.write([...frames()].slice(0, 2 + step.stallAfterChunks).join(""));
      return;
    }
    if (step.resetAfterChunks !== undefined) {
      writeThenReset(response, frames(), 2 + step.resetAfterChunks);
      return;
    }
    await writeFrames(response, frames(), step);
  });
  return Object.assign(server, { faults, arrivals });
}
