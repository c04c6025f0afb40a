import { MgxClient } from "../../../sdk/index.ts";

/** A fetch that answers from a script, in order, and records what it was sent: for MgxClient's unit tests. */

export interface Sent {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: string | null;
}

/** A client (key `mgx_test`, backoff of 1–2 ms) whose requests get `answers` in turn; an Error is thrown as fetch's. */
export function scripted(...answers: (Response | Error)[]) {
  const sent: Sent[] = [];
  const fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    sent.push({
      method: init?.method ?? "GET",
      url: String(input),
      headers: { ...(init?.headers as Record<string, string>) },
      body: (init?.body as string | undefined) ?? null,
    });
    const answer = answers.shift();
    if (!answer) throw new Error("no answer scripted for this request");
    if (answer instanceof Error) throw answer;
    return answer;
  };
  const client = new MgxClient({
    baseUrl: "http://api.test",
    apiKey: "mgx_test",
    fetch: fetch as typeof globalThis.fetch,
    retryBackoff: { baseDelayMs: 1, maxDelayMs: 2 },
  });
  return { client, sent, fetch: fetch as typeof globalThis.fetch };
}
