import autocannon from "autocannon";

/** One autocannon case on loopback, bounded in time; figures for the report. */

export interface LoadResult {
  name: string;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  non2xx: number;
  total: number;
}

export async function runLoad(
  name: string,
  url: string,
  options: { connections: number; durationSeconds: number; headers?: Record<string, string> },
): Promise<LoadResult> {
  const result = await autocannon({
    url,
    connections: options.connections,
    duration: options.durationSeconds,
    headers: options.headers,
  });
  return {
    name,
    requestsPerSecond: result.requests.average,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
    total: result.requests.total,
  };
}

export function formatResult(result: LoadResult): string {
  return `${result.name.padEnd(28)} ${result.requestsPerSecond.toFixed(0).padStart(6)} req/s  p50 ${result.p50Ms
    .toFixed(0)
    .padStart(4)} ms  p99 ${result.p99Ms.toFixed(0).padStart(4)} ms  errors ${result.errors}  non-2xx ${result.non2xx}`;
}
