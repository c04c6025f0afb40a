import { expect } from "vitest";
import { BASE, fetcher } from "./llm.ts";

/** Reading the served /openapi.json in tests: the document, and one response's headers with references resolved. */

export type Doc = Record<string, any>;
export type HeaderEntry = { required?: boolean; description?: string };

/** The headers the middleware sets (src/docs/shared-headers.ts writes them into the document). */
export const SHARED_HEADERS = [
  "X-Request-Id",
  "X-API-Version",
  "RateLimit",
  "RateLimit-Policy",
  "Retry-After",
  "WWW-Authenticate",
];

export async function openApi(): Promise<Doc> {
  return (await (await fetcher(`${BASE}/openapi.json`)).json()) as Doc;
}

/** Follows `$ref`s (`#/components/...`) to what they name. */
export function resolve(doc: Doc, value: Record<string, any>): Record<string, any> {
  if (typeof value.$ref !== "string") return value;
  const target = value.$ref
    .slice(2)
    .split("/")
    .reduce((node: Record<string, any>, key: string) => node?.[key], doc);
  expect(target, value.$ref).toBeDefined();
  return resolve(doc, target);
}

/** The document's entry for one response of one operation (failing the test if there is none). */
export function documentedResponse(doc: Doc, method: string, path: string, status: number): Record<string, any> {
  const response = doc.paths[path]?.[method]?.responses?.[String(status)];
  expect(response, `${method.toUpperCase()} ${path} ${status} is documented`).toBeDefined();
  return resolve(doc, response);
}

/** The headers the document names on one response, by name. */
export function documentedHeaders(doc: Doc, method: string, path: string, status: number): Record<string, HeaderEntry> {
  const headers: Record<string, HeaderEntry> = {};
  for (const [name, header] of Object.entries(documentedResponse(doc, method, path, status).headers ?? {})) {
    headers[name] = resolve(doc, header as Record<string, any>);
  }
  return headers;
}
