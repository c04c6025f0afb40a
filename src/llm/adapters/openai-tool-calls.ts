import type { ToolCallDelta } from "../provider.ts";
import type { ChatMessage } from "../types.ts";

/**
 * Tool calls as OpenAI sends them, from servers that send them otherwise:
 * each call its own index, its arguments as JSON text, and an id.
 */

/**
 * Streamed tool calls, indexed as OpenAI indexes them (each call its own `index`, from 0), whatever the
 * server sent. Ollama streams each call whole in one delta, since 0.4.7 all with `index: 0` (ollama#15457)
 * and before without any (ollama#7881): read as sent, the calls of a parallel answer ran together into
 * one (names and arguments concatenated, unparseable) or were lost, for us and for the caller's SDK. A
 * delta naming an id other than its slot's starts a new call; one without an index continues the last.
 * A call's arguments and id are as OpenAI sends them too (see toolArguments and newCallId), and its name comes
 * once: MiniMax through NVIDIA NIM sends the whole name again in each delta of a call, which joined as OpenAI's
 * pieces are (by us, openai-python, LangChain) named it `read_fileread_file…`, a tool no one offered.
 */
export class ToolCallIndexer {
  /** Each call's id so far, by our index. */
  readonly #ids: (string | undefined)[] = [];
  /** The provider's index → ours, for the call it last started there. */
  readonly #ours = new Map<number, number>();
  /** Each call's name so far, by our index. */
  readonly #names: string[] = [];

  map(parts: ToolCallDelta[]): ToolCallDelta[] {
    return parts.flatMap((part) => {
      const id = typeof part.id === "string" && part.id !== "" ? part.id : undefined;
      const theirs = typeof part.index === "number" ? part.index : undefined;
      let index = theirs === undefined ? this.#ids.length - 1 : this.#ours.get(theirs);
      const known = index !== undefined && index >= 0 ? this.#ids[index] : undefined;
      let started = false;
      if (index === undefined || index < 0 || (id !== undefined && known !== undefined && id !== known)) {
        index = this.#ids.length;
        this.#ids.push(id ?? newCallId());
        started = true;
      } else if (known === undefined && id !== undefined) this.#ids[index] = id;
      if (theirs !== undefined) this.#ours.set(theirs, index);
      const args = toolArguments(part.function?.arguments);
      const name = typeof part.function?.name === "string" ? part.function.name : undefined;
      const named = this.#names[index] ?? "";
      // The whole name again, on a delta of a call already so named, says nothing new: not passed on (a name a
      // server sends in pieces still is, each piece once).
      const repeatsName = !started && name !== undefined && name !== "" && name === named;
      if (!repeatsName && name) this.#names[index] = named + name;
      if (repeatsName && !args) return [];
      const fn = part.function ? { ...part.function, ...(args !== undefined ? { arguments: args } : {}) } : undefined;
      if (fn && repeatsName) delete fn.name;
      return [
        {
          ...part,
          index,
          // A call's first delta names it, as OpenAI's does, with our id when the server gave none.
          ...(started ? { id: this.#ids[index], type: "function" as const } : {}),
          ...(fn ? { function: fn } : {}),
        },
      ];
    });
  }
}

/**
 * A call's arguments as OpenAI sends them, JSON text: some servers send them parsed, as an object, which
 * the caller's JSON.parse (and our own concatenation of fragments, "[object Object]") cannot read.
 */
export function toolArguments(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  return typeof value === "string" ? value : JSON.stringify(value);
}

/**
 * An id for a call the server sent without one (some local servers do): the caller must name it in the
 * tool message that answers the call, and our endpoint refuses an assistant tool call without an id.
 */
export function newCallId(): string {
  return `call_${crypto.randomUUID().replaceAll("-", "")}`;
}

/** The tool calls of a whole answer, with JSON text arguments and an id each (see toolArguments and newCallId). */
export function wholeToolCalls(calls: ChatMessage["tool_calls"]): ChatMessage["tool_calls"] {
  return calls?.map((call) => ({
    ...call,
    id: typeof call.id === "string" && call.id !== "" ? call.id : newCallId(),
    type: "function" as const,
    function: { ...call.function, arguments: toolArguments(call.function?.arguments) ?? "{}" },
  }));
}
