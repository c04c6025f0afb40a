/**
 * Half of a UTF-16 surrogate pair without its other half (JSON's "\ud800"): no character. Stored in a D1 text
 * column (UTF-8) it becomes U+FFFD, so the text read back is not the text written.
 */
const LONE_SURROGATE = /\p{Cs}/u;

export function hasLoneSurrogate(text: string): boolean {
  return LONE_SURROGATE.test(text);
}

/**
 * Why a model name with a lone surrogate is refused (422): its calls were charged, and their breaker kept, under
 * the name D1 stores instead, so usage and GET /api/v1/providers told of a model no chain or request named.
 */
export const LONE_SURROGATE_MODEL_MESSAGE =
  "must be well-formed Unicode: a lone surrogate (such as \\ud800) is no character, and names no model";

/** Why an id with a lone surrogate is refused (422): stored as U+FFFD, it no longer finds what it names. */
export const LONE_SURROGATE_ID_MESSAGE =
  "must be well-formed Unicode: a lone surrogate (such as \\ud800) is no character, and an id with one is never found";

/**
 * Why text with a lone surrogate is refused (422): a D1 text column stores U+FFFD in its place, so the 2xx
 * answered the text as sent, GET answered another, and an idempotent replay differed from its first answer.
 */
export const LONE_SURROGATE_TEXT_MESSAGE =
  "must be well-formed Unicode: a lone surrogate (such as \\ud800) is no character, and would be stored as U+FFFD";

/**
 * The length of the text in UTF-8, what goes on the wire, without encoding it: `length` counts UTF-16 units, so
 * text in most scripts but Latin measured a third of its size or less.
 */
export function utf8ByteLength(text: string): number {
  let bytes = text.length;
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (code < 0x80) continue;
    // Two bytes below U+0800, three up to U+FFFF; a surrogate pair (two units) is four.
    bytes += code < 0x800 || (code >= 0xd800 && code <= 0xdfff) ? 1 : 2;
  }
  return bytes;
}
