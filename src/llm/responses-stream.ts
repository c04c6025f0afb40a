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
 * or response.failed with the error when the call broke after the stream began. A stored response is stored
 * before its response.completed (or incomplete) is sent. The openai SDK's
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
  /** The answered response as it will be sent: stored first unless `store: false` (src/llm/responses-store.ts). */
  keep: (response: ReturnType<typeof responseObject>) => Promise<ReturnType<typeof responseObject>> = async (
    response,
  ) => response,
): ReadableStream<Uint8Array> {
  let sequence = 0;
  const items: ItemState[] = [];
  /** Each closed item's status: an item is closed when the next one opens, or at the end. */
  const closed = new Map<ItemState, ItemStatus>();
  /** The item deltas go to now; OpenAI's items come one after another, each done before the next is added. */
  let current: { state: ItemState; index: number } | undefined;
  let messages = 0;
  const calls = new Map<number, { state: FunctionCallState; index: number }>();
  const event = (type: string, fields: Record<string, unknown>) =>
    `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sequence++, ...fields })}\n\n`;

  function closeItem(item: ItemState, index: number, status: ItemStatus): string[] {
    const frames: string[] = [];
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
    closed.set(item, status);
    return frames;
  }

  /**
   * Adds an item, closing the one before it: a client acts on an item when it is done (the AI SDK emits a tool
   * call, and runs it, at its `output_item.done`), so an item held open to the end of the answer delayed each.
   */
  function openItem<T extends ItemState>(frames: string[], state: T): { state: T; index: number } {
    if (current) frames.push(...closeItem(current.state, current.index, "completed"));
    const opened = { state, index: items.push(state) - 1 };
    current = opened;
    frames.push(
      event("response.output_item.added", { output_index: opened.index, item: itemView(state, "in_progress") }),
    );
    return opened;
  }

  function openMessage(frames: string[]): { state: MessageState; index: number } {
    if (current?.state.type === "message") return current as { state: MessageState; index: number };
    // Text after a tool call (Anthropic may write some) is a message of its own, as OpenAI's would be.
    const id = messages === 0 ? messageItemId(callId) : `${messageItemId(callId)}_${messages}`;
    messages++;
    return openItem(frames, { type: "message", id, parts: [] });
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

  /** The items so far: each closed one as it was closed, the one still open (if any) as `open`. */
  const output = (open: ItemStatus) => items.map((item) => itemView(item, closed.get(item) ?? open));

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
            call = openItem(frames, {
              type: "function_call",
              id: functionCallItemId(callId, calls.size),
              // Every adapter sends a call's id and name with its first fragment, as OpenAI does.
              callId: fragment.id ?? `call_${callId}_${calls.size}`,
              name: fragment.function?.name ?? "",
              arguments: "",
            });
            calls.set(fragment.index, call);
          }
          // Every adapter streams a call's fragments before the next call's (OpenAI, Anthropic's content blocks),
          // so a call is open while its fragments come.
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
      async end(final) {
        const frames: string[] = [];
        // An empty answer is an empty message, as a whole one is.
        if (items.length === 0) openPart(frames, "output_text");
        const incomplete = incompleteReason(final.finish_reason);
        const status = incomplete ? "incomplete" : "completed";
        // The item being written when the answer stopped is the one a cut answer cut; those before it were done.
        if (current) frames.push(...closeItem(current.state, current.index, status));
        current = undefined;
        const response = await keep(
          responseObject(shell, {
            status,
            output: output(status),
            ...(incomplete ? { incomplete } : {}),
            result: final,
          }),
        );
        frames.push(event(incomplete ? "response.incomplete" : "response.completed", { response }));
        return frames;
      },
      failed(error) {
        const message = error instanceof Error ? error.message : "the stream failed";
        const response = responseObject(shell, {
          status: "failed",
          output: output("incomplete"),
          error: { code: "server_error", message },
          // A failed call is not stored.
          stored: false,
        });
        return [event("response.failed", { response })];
      },
    },
    onError,
    onCancel,
  );
}
