import { sha256Hex, toBase64Url } from "./crypto.ts";

/**
 * Workspace API keys: `mgx_` + 32 random bytes (base64url). Only the SHA-256
 * of the whole key is stored, plus a short display prefix.
 */

export const API_KEY_PREFIX = "mgx_";
const KEY_RANDOM_BYTES = 32;
const KEY_PATTERN = /^mgx_[A-Za-z0-9_-]{43}$/;
/** What of a key may be shown (GET /api/v1/api-keys, audit actors): `mgx_` and 8 of its 43 random characters. */
export const DISPLAY_PREFIX_CHARS = 12;

export function generateApiKey(): string {
  return API_KEY_PREFIX + toBase64Url(crypto.getRandomValues(new Uint8Array(KEY_RANDOM_BYTES)));
}

export function isApiKeyFormat(candidate: string): boolean {
  return KEY_PATTERN.test(candidate);
}

export function hashApiKey(key: string): Promise<string> {
  return sha256Hex(key);
}

export function displayPrefix(key: string): string {
  return key.slice(0, DISPLAY_PREFIX_CHARS);
}
