import { type RecordedRequest, type RecordingServer, startRecordingServer } from "./recording-server.ts";

/** A Sentry ingest endpoint: accepts envelopes at `/api/{project}/envelope/` and parses them. */

export interface SentryEnvelope {
  header: Record<string, unknown>;
  items: { header: Record<string, unknown>; payload: Record<string, unknown> | string }[];
}

export function parseEnvelope(request: RecordedRequest): SentryEnvelope {
  const lines = request.body.toString("utf8").split("\n").filter(Boolean);
  const header = JSON.parse(lines[0]);
  const items: SentryEnvelope["items"] = [];
  for (let index = 1; index < lines.length; index += 2) {
    const itemHeader = JSON.parse(lines[index]);
    const raw = lines[index + 1] ?? "";
    let payload: Record<string, unknown> | string = raw;
    try {
      payload = JSON.parse(raw);
    } catch {
      // Attachments may be plain text.
    }
    items.push({ header: itemHeader, payload });
  }
  return { header, items };
}

export interface FakeSentry extends RecordingServer {
  /** The DSN that points a Sentry SDK at this server. */
  dsn: string;
  envelopes(): SentryEnvelope[];
}

export async function startFakeSentry(projectId = "42"): Promise<FakeSentry> {
  const server = await startRecordingServer((request, response) => {
    if (request.method === "POST" && request.path.startsWith(`/api/${projectId}/envelope/`)) {
      response.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ id: "0".repeat(32) }));
      return;
    }
    response.writeHead(404).end();
  });
  return {
    ...server,
    dsn: `http://publickey@127.0.0.1:${server.port}/${projectId}`,
    envelopes: () => server.requests.filter((request) => request.path.includes("/envelope/")).map(parseEnvelope),
  };
}
