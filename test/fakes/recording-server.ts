import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";

/**
 * A real HTTP server on 127.0.0.1 that records what it receives and answers
 * as its handler says: the base of the fake OTLP collector, Sentry and LLM
 * providers. Fault injection is the handler's job.
 */

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingMessage["headers"];
  body: Buffer;
}

export type FakeHandler = (request: RecordedRequest, response: ServerResponse) => void | Promise<void>;

export interface RecordingServer {
  url: string;
  port: number;
  /** Every request, in order (empty when started with `keepRequests: false`). */
  requests: RecordedRequest[];
  /** How many requests arrived, kept or not. */
  readonly received: number;
  waitFor(match: (request: RecordedRequest) => boolean, timeoutMs?: number): Promise<RecordedRequest>;
  close(): Promise<void>;
}

/**
 * `keepRequests: false` is for load: a benchmark's hundreds of thousands of
 * requests, each kept with its headers and body, grew this process's heap by
 * hundreds of MB, and its garbage collection stalled the fake mid-run.
 */
export async function startRecordingServer(
  handler: FakeHandler,
  options: { keepRequests?: boolean } = {},
): Promise<RecordingServer> {
  const keepRequests = options.keepRequests ?? true;
  const requests: RecordedRequest[] = [];
  let received = 0;
  const server: Server = createServer((incoming, response) => {
    const chunks: Buffer[] = [];
    incoming.on("data", (chunk: Buffer) => chunks.push(chunk));
    incoming.on("end", async () => {
      const recorded: RecordedRequest = {
        method: incoming.method ?? "GET",
        path: incoming.url ?? "/",
        headers: incoming.headers,
        body: Buffer.concat(chunks),
      };
      received++;
      if (keepRequests) requests.push(recorded);
      try {
        await handler(recorded, response);
      } catch (error) {
        response.writeHead(500).end(String(error));
      }
    });
  });
  await new Promise<void>((ready) => server.listen(0, "127.0.0.1", ready));
  const address = server.address();
  if (!address || typeof address !== "object") throw new Error("fake server has no address");
  const url = `http://127.0.0.1:${address.port}`;
  return {
    url,
    port: address.port,
    requests,
    get received() {
      return received;
    },
    async waitFor(match, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const found = requests.find(match);
        if (found) return found;
        await new Promise((wake) => setTimeout(wake, 50));
      }
      throw new Error(`no matching request within ${timeoutMs} ms (received ${requests.length})`);
    },
    close: () =>
      new Promise<void>((closed) => {
        server.closeAllConnections();
        server.close(() => closed());
      }),
  };
}
