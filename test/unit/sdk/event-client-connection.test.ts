import { afterEach, describe, expect, it, vi } from "vitest";
import { type ConnectionState, EventClient, type EventClientOptions } from "../../../sdk/index.ts";
import { recordDelays } from "./timer-delays.ts";

/**
 * How the EventClient opens a connection: the address it asks a ticket and opens the socket at, how long it waits
 * after a ticket refused for now (429, 503), and a WebSocket constructor that throws.
 */

/** A socket that stays connecting: neither open nor close comes unless the test says. */
class FakeSocket {
  readyState = 0;
  closedWith: number | undefined;
  readonly url: string;
  constructor(url: string) {
    this.url = url;
  }
  addEventListener() {}
  send() {}
  close(code?: number) {
    this.readyState = 3;
    this.closedWith = code;
  }
}

function problem(status: number, headers: Record<string, string> = {}): Response {
  return Response.json(
    { type: "about:blank", title: "Refused", status, detail: "Not now.", code: "X", request_id: "req_1" },
    { status, headers: { "Content-Type": "application/problem+json", ...headers } },
  );
}

/** A client whose tickets come from `answers` (through a stubbed fetch, as with an apiKey) and whose sockets are fakes. */
function setup(options: Partial<EventClientOptions>, ...answers: Response[]) {
  const asked: string[] = [];
  const fetchMock = vi.fn(async (input: RequestInfo | URL) => {
    asked.push(String(input));
    return answers.shift() ?? problem(500);
  });
  vi.stubGlobal("fetch", fetchMock);
  const sockets: FakeSocket[] = [];
  const states: ConnectionState[] = [];
  const errors: string[] = [];
  const client = new EventClient({
    baseUrl: "http://api.test",
    apiKey: "mgx_test",
    WebSocket: (url) => {
      const socket = new FakeSocket(url);
      sockets.push(socket);
      return socket as unknown as WebSocket;
    },
    random: () => 0,
    ...options,
  });
  client.onStateChange((state) => states.push(state));
  client.onError((error) => errors.push(error.message));
  return { client, asked, sockets, states, errors, fetchMock };
}

const ticket = () => Response.json({ ticket: "tkt_1", expires_at: new Date().toISOString() }, { status: 201 });

afterEach(() => {
  vi.restoreAllMocks();
  vi.unstubAllGlobals();
});

describe("EventClient's address", () => {
  it("opens the socket under the base URL's path, where it asked the ticket, not at the host's root", async () => {
    const { client, asked, sockets } = setup({ baseUrl: "https://gw.test/mgx/" }, ticket());
    client.connect();
    await vi.waitFor(() => expect(sockets).toHaveLength(1));
    expect(asked).toEqual(["https://gw.test/mgx/api/v1/events/tickets"]);
    const url = new URL(sockets[0].url);
    expect(`${url.protocol}//${url.host}${url.pathname}`).toBe("wss://gw.test/mgx/api/v1/events/ws");
    expect(url.searchParams.get("ticket")).toBe("tkt_1");
    client.close();
  });

  it("opens ws: for an http: base URL at its root", async () => {
    const { client, sockets } = setup({}, ticket());
    client.connect();
    await vi.waitFor(() => expect(sockets).toHaveLength(1));
    expect(sockets[0].url.split("?")[0]).toBe("ws://api.test/api/v1/events/ws");
    client.close();
  });
});

describe("EventClient refused a ticket for now", () => {
  it("waits out the Retry-After of a 429 before asking again, not its backoff's half second", async () => {
    const delays = recordDelays();
    const { client, fetchMock, errors } = setup({}, problem(429, { "Retry-After": "30" }));
    client.connect();
    await vi.waitFor(() => expect(errors).toHaveLength(1));
    expect(fetchMock).toHaveBeenCalledTimes(1);
    expect(delays).toEqual([30_000]);
    expect(client.state).toBe("reconnecting");
    client.close();
  });

  it("keeps its backoff when that is longer than the Retry-After, or when there is none", async () => {
    const delays = recordDelays();
    const { client, errors } = setup(
      { backoff: { baseDelayMs: 5_000, maxDelayMs: 30_000 } },
      problem(503, { "Retry-After": "1" }),
    );
    client.connect();
    await vi.waitFor(() => expect(errors).toHaveLength(1));
    expect(delays).toEqual([5_000]);
    client.close();

    const second = setup({}, problem(503));
    second.client.connect();
    await vi.waitFor(() => expect(second.errors).toHaveLength(1));
    expect(delays).toEqual([5_000, 500]);
    second.client.close();
  });
});

describe("EventClient whose WebSocket constructor throws", () => {
  it("tells onError and closes, rather than rejecting unseen and staying 'connecting' for ever", async () => {
    let constructed = 0;
    const { client, states, errors } = setup(
      {
        WebSocket: () => {
          constructed += 1;
          // A browser's answer to ws: from an https: page.
          throw new DOMException("An insecure WebSocket connection may not be initiated.", "SecurityError");
        },
      },
      ticket(),
    );
    client.connect();
    await vi.waitFor(() => expect(errors).toHaveLength(1));
    expect(errors[0]).toContain("insecure WebSocket");
    expect(states).toEqual(["connecting", "closed"]);
    await new Promise((wake) => setTimeout(wake, 20));
    expect(constructed).toBe(1);
  });
});

describe("EventClient whose upgrade never answers", () => {
  it("gives the connection up after twice the ping interval and connects again, rather than wait for ever", async () => {
    const { client, sockets, states } = setup({
      getTicket: async () => "tkt_x",
      pingIntervalMs: 10,
      backoff: { baseDelayMs: 1, maxDelayMs: 2 },
    });
    client.connect();
    await vi.waitFor(() => expect(sockets.length).toBeGreaterThanOrEqual(2), { timeout: 2_000 });
    expect(sockets[0].closedWith).toBe(4000);
    expect(states.slice(0, 2)).toEqual(["connecting", "reconnecting"]);
    client.close();
  });
});
