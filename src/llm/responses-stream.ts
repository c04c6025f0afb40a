import type { StreamEvent } from "./provider.ts";
import {
  functionCallItemId,
  incompleteReason,
  messageItemId,
  type ResponseShell,
  responseObject,
} from "./responses-compat.ts";
import type { ResponseOutputItem, ResponseOutputPart } from "./responses-schemas.ts";
import { routedSseBody } from "./sse-body.ts";
import type { ChatResult } from "./types.ts";

/**
 * A streamed answer as the Responses API's semantic events, each an SSE `event:` line and a `data:` line with
 * its `sequence_number`: response.created and response.in_progress, then each output item as it comes (a
 * message's text or refusal parts, a function call's arguments), added, its deltas, done; then
 * response.completed, or response.incomplete when the answer was cut at its length or by a content filter,
 * or response.failed with the error when the call broke after the stream began. The openai SDK's
 * `responses.stream()` rebuilds the response from them and checks each item's identity as it goes.
 */

type ItemStatus = "in_progress" | "completed" | "incomplete";

interface MessageState {
  type: "message";
  id: string;
  parts: { type: "output_text" | "refusal"; value: string }[];
}

interface FunctionCallState {
  type: "function_call";
  id: string;
  callId: string;
  name: string;
  arguments: string;
}

type ItemState = MessageState | FunctionCallState;

function partView(part: MessageState["parts"][number]): ResponseOutputPart {
  return part.type === "output_text"
    ? { type: "output_text", text: part.value, annotations: [], logprobs: [] }
    : { type: "refusal", refusal: part.value };
}

function itemView(item: ItemState, status: ItemStatus): ResponseOutputItem {
  if (item.type === "message") {
    return { type: "message", id: item.id, status, role: "assistant", content: item.parts.map(partView) };
  }
  return {
    type: "function_call",
    id: item.id,
    call_id: item.callId,
    name: item.name,
    arguments: item.arguments,
    status,
  };
}

export function responseEventStream(
  shell: ResponseShell,
  callId: string,
  deltas: AsyncIterable<StreamEvent>,
  result: Promise<ChatResult>,
  onError: (error: unknown) => void,
  onCancel?: () => void,
): ReadableStream<Uint8Array> {
  let sequence = 0;
  const items: ItemState[] = [];
  let message: { state: MessageState; index: number } | undefined;
  const calls = new Map<number, { state: FunctionCallState; index: number }>();
  const event = (type: string, fields: Record<string, unknown>) =>
    `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sequence++, ...fields })}\n\n`;

  function openMessage(frames: string[]) {
    if (message) return message;
    const state: MessageState = { type: "message", id: messageItemId(callId), parts: [] };
    message = { state, index: items.push(state) - 1 };
    frames.push(
      event("response.output_item.added", { output_index: message.index, item: itemView(state, "in_progress") }),
    );
    return message;
  }

  /** The message's part of this kind that deltas go to: the last one, or a new one when the kind changes. */
  function openPart(frames: string[], type: "output_text" | "refusal") {
    const { state, index } = openMessage(frames);
    const last = state.parts.at(-1);
    if (last?.type === type) return { item: state, index, contentIndex: state.parts.length - 1, part: last };
    const part = { type, value: "" };
    state.parts.push(part);
    const contentIndex = state.parts.length - 1;
    frames.push(
      event("response.content_part.added", {
        item_id: state.id,
        output_index: index,
        content_index: contentIndex,
        part: partView(part),
      }),
    );
    return { item: state, index, contentIndex, part };
  }

  function closeItems(status: ItemStatus): string[] {
    const frames: string[] = [];
    items.forEach((item, index) => {
      if (item.type === "message") {
        item.parts.forEach((part, contentIndex) => {
          const where = { item_id: item.id, output_index: index, content_index: contentIndex };
          frames.push(
            part.type === "output_text"
              ? event("response.output_text.done", { ...where, text: part.value, logprobs: [] })
              : event("response.refusal.done", { ...where, refusal: part.value }),
          );
          frames.push(event("response.content_part.done", { ...where, part: partView(part) }));
        });
      } else {
        frames.push(
          event("response.function_call_arguments.done", {
            item_id: item.id,
            output_index: index,
            name: item.name,
            arguments: item.arguments,
          }),
        );
      }
      frames.push(event("response.output_item.done", { output_index: index, item: itemView(item, status) }));
    });
    return frames;
  }

  const output = (status: ItemStatus) => items.map((item) => itemView(item, status));

  return routedSseBody(
    deltas,
    result,
    {
      start() {
        const response = responseObject(shell, { status: "in_progress", output: [] });
        return [event("response.created", { response }), event("response.in_progress", { response })];
      },
      delta(delta) {
        const frames: string[] = [];
        if (delta.content) {
          const { item, index, contentIndex, part } = openPart(frames, "output_text");
          part.value += delta.content;
          frames.push(
            event("response.output_text.delta", {
              item_id: item.id,
              output_index: index,
              content_index: contentIndex,
              delta: delta.content,
              logprobs: [],
            }),
          );
        }
        if (delta.refusal) {
          const { item, index, contentIndex, part } = openPart(frames, "refusal");
          part.value += delta.refusal;
          frames.push(
            event("response.refusal.delta", {
              item_id: item.id,
              output_index: index,
              content_index: contentIndex,
              delta: delta.refusal,
            }),
          );
        }
        for (const fragment of delta.tool_calls ?? []) {
          let call = calls.get(fragment.index);
          if (!call) {
            const state: FunctionCallState = {
              type: "function_call",
              id: functionCallItemId(callId, calls.size),
              // Every adapter sends a call's id and name with its first fragment, as OpenAI does.
              callId: fragment.id ?? `call_${callId}_${calls.size}`,
              name: fragment.function?.name ?? "",
              arguments: "",
            };
            call = { state, index: items.push(state) - 1 };
            calls.set(fragment.index, call);
            frames.push(
              event("response.output_item.added", { output_index: call.index, item: itemView(state, "in_progress") }),
            );
          }
          const piece = fragment.function?.arguments;
          if (piece) {
            call.state.arguments += piece;
            frames.push(
              event("response.function_call_arguments.delta", {
                item_id: call.state.id,
                output_index: call.index,
                delta: piece,
              }),
            );
          }
        }
        return frames;
      },
      end(final) {
        const frames: string[] = [];
        // An empty answer is an empty message, as a whole one is.
        if (items.length === 0) openPart(frames, "output_text");
        const incomplete = incompleteReason(final.finish_reason);
        const status = incomplete ? "incomplete" : "completed";
        frames.push(...closeItems(status));
        const response = responseObject(shell, {
          status,
          output: output(status),
          ...(incomplete ? { incomplete } : {}),
          result: final,
        });
        frames.push(event(incomplete ? "response.incomplete" : "response.completed", { response }));
        return frames;
      },
      failed(error) {
        const message = error instanceof Error ? error.message : "the stream failed";
        const response = responseObject(shell, {
          status: "failed",
          output: output("incomplete"),
          error: { code: "server_error", message },
        });
        return [event("response.failed", { response })];
      },
    },
    onError,
    onCancel,
  );
}
