/**
 * The plainest value a JSON Schema allows, for the `simulated` provider's JSON answers and tool arguments: the
 * first enum value, the minimum that passes its bounds, a string of its format and lengths, as few items as it asks.
 * The SDKs parse what they are answered (the `openai` SDK's `parse()` and `zodFunction` with zod's checks), so a
 * value the schema refuses failed the call under `npm run dev`.
 */

/** A value the schema allows, its strings built from `words` where no format says otherwise. */
export function schemaExample(schema: unknown, words: string): unknown {
  return exampleOf(schema, new Example(schema, words), 0);
}

/**
 * A schema node as an object. `true` and `false` are schemas too (any value, none), and a caller's schema may
 * hold nodes that are no schema at all (`"string"`): each is read as `{}`, any value, rather than throw for the
 * call (a 503 after three tries).
 */
function asSchema(node: unknown): Record<string, unknown> {
  return typeof node === "object" && node !== null && !Array.isArray(node) ? (node as Record<string, unknown>) : {};
}

/**
 * Values built for one answer at most, past which every value is `{}`: a recursive schema (a `$ref` to itself in
 * each of its properties, `minItems` at every level) grows as a power of its depth, in the isolate every tenant
 * shares.
 */
const EXAMPLE_VALUES_MAX = 10_000;
/** Items of one array at most, whatever its `minItems` says. */
const EXAMPLE_ITEMS_MAX = 32;

/** Formats zod's (and most validators') string checks hold to, each with a value that passes them. */
const FORMAT_EXAMPLES: Record<string, string> = {
  email: "simulated@example.com",
  "idn-email": "simulated@example.com",
  uri: "https://example.com/simulated",
  url: "https://example.com/simulated",
  "uri-reference": "https://example.com/simulated",
  iri: "https://example.com/simulated",
  uuid: "00000000-0000-4000-8000-000000000000",
  "date-time": "2025-01-01T00:00:00Z",
  date: "2025-01-01",
  time: "00:00:00",
  duration: "P1D",
  hostname: "example.com",
  "idn-hostname": "example.com",
  ipv4: "127.0.0.1",
  ipv6: "::1",
};

/** One answer's building: its root schema (which `$ref`s point into), its words for strings, and its budget. */
class Example {
  readonly root: unknown;
  readonly words: string;
  /** Values built so far. */
  values = 0;

  constructor(root: unknown, words: string) {
    this.root = root;
    this.words = words;
  }

  /** The node a local `$ref` names (`#`, `#/$defs/…`, `#/definitions/…`), or undefined: any value. */
  resolve(ref: string): unknown {
    if (ref !== "#" && !ref.startsWith("#/")) return undefined;
    let node: unknown = this.root;
    for (const token of ref.slice(2).split("/").filter(Boolean)) {
      const key = pointerToken(token);
      const container = Array.isArray(node) ? node : asSchema(node);
      node = Object.hasOwn(container, key) ? (container as Record<string, unknown>)[key] : undefined;
      if (node === undefined) return undefined;
    }
    return node;
  }
}

/** A JSON pointer's token as a key (`~1` is `/`, `~0` is `~`; a URI fragment's may be percent-encoded). */
function pointerToken(token: string): string {
  let decoded = token;
  try {
    decoded = decodeURIComponent(token);
  } catch {
    // Not percent-encoded after all (a lone `%`): the token as written.
  }
  return decoded.replaceAll("~1", "/").replaceAll("~0", "~");
}

function exampleOf(node: unknown, example: Example, depth: number): unknown {
  // Deeper nodes, and alternatives nested without end (anyOf in anyOf…), are any value: the depth bounds the
  // recursion, and the budget the breadth of a schema that refers to itself.
  if (depth > 8 || example.values >= EXAMPLE_VALUES_MAX) return {};
  example.values++;
  const schema = asSchema(node);
  if (typeof schema.$ref === "string") return exampleOf(example.resolve(schema.$ref), example, depth + 1);
  if (Array.isArray(schema.enum)) return schema.enum[0];
  if ("const" in schema) return schema.const;
  const alternatives = (schema.anyOf ?? schema.oneOf) as unknown[] | undefined;
  if (Array.isArray(alternatives) && alternatives.length > 0) return exampleOf(alternatives[0], example, depth + 1);
  if (Array.isArray(schema.allOf) && schema.allOf.length > 0) {
    // Each part holds: objects merged, as `allOf` of object schemas (zod's intersections) asks.
    const parts = schema.allOf.map((part) => exampleOf(part, example, depth + 1));
    return parts.every(isPlainObject) ? Object.assign({}, ...parts) : parts[0];
  }
  const type = Array.isArray(schema.type) ? schema.type.find((name) => name !== "null") : schema.type;
  switch (type) {
    case "string":
      return stringExample(schema, example.words);
    case "number":
    case "integer":
      return numberExample(schema, type === "integer");
    case "boolean":
      return false;
    case "array":
      return arrayExample(schema, example, depth);
    case "null":
      return null;
    default:
      return Object.fromEntries(
        Object.entries(asSchema(schema.properties)).map(([name, property]) => [
          name,
          exampleOf(property, example, depth + 1),
        ]),
      );
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The words, or a value of the string's format, held to its lengths. */
function stringExample(schema: Record<string, unknown>, words: string): string {
  const formatted = typeof schema.format === "string" ? FORMAT_EXAMPLES[schema.format] : undefined;
  let text = formatted ?? words;
  const min = typeof schema.minLength === "number" ? Math.min(schema.minLength, 10_000) : 0;
  if (text.length < min) text = text.padEnd(min, formatted === undefined ? " [simulated]" : "x");
  if (typeof schema.maxLength === "number" && text.length > schema.maxLength) {
    text = text.slice(0, Math.max(0, schema.maxLength)).trimEnd().padEnd(Math.min(min, schema.maxLength), "x");
  }
  return text;
}

/**
 * The minimum (past it by one, or halfway to the maximum, when it is exclusive), else 0 where the maximum allows
 * it, else the maximum: zod's `.positive()` is `exclusiveMinimum: 0`, which 0 fails.
 */
function numberExample(schema: Record<string, unknown>, integer: boolean): number {
  const bound = (inclusive: unknown, exclusive: unknown): { value: number; exclusive: boolean } | undefined => {
    // Draft 4 says an exclusive bound as `exclusiveMinimum: true` beside `minimum`; later drafts, as a number.
    if (typeof exclusive === "number") return { value: exclusive, exclusive: true };
    if (typeof inclusive === "number") return { value: inclusive, exclusive: exclusive === true };
    return undefined;
  };
  const low = bound(schema.minimum, schema.exclusiveMinimum);
  const high = bound(schema.maximum, schema.exclusiveMaximum);
  const fits = (value: number) =>
    (!low || (low.exclusive ? value > low.value : value >= low.value)) &&
    (!high || (high.exclusive ? value < high.value : value <= high.value));
  const candidates: number[] = [];
  if (low) {
    const above = integer ? Math.floor(low.value) + 1 : low.value + 1;
    candidates.push(low.exclusive ? above : integer ? Math.ceil(low.value) : low.value);
  } else candidates.push(0);
  if (high) {
    const below = integer ? Math.ceil(high.value) - 1 : high.value - 1;
    candidates.push(high.exclusive ? below : integer ? Math.floor(high.value) : high.value);
  }
  if (low && high) {
    const middle = (low.value + high.value) / 2;
    candidates.push(integer ? Math.round(middle) : middle);
  }
  // A multiple of `multipleOf` near each candidate, above it first (0 is a multiple of anything).
  const step = typeof schema.multipleOf === "number" && schema.multipleOf > 0 ? schema.multipleOf : undefined;
  const tried = step
    ? candidates.flatMap((value) => [Math.ceil(value / step) * step, Math.floor(value / step) * step])
    : candidates;
  return tried.find(fits) ?? candidates[0];
}

/** No items, or as many as `minItems` asks (each the plainest of its `items` or `prefixItems` schema). */
function arrayExample(schema: Record<string, unknown>, example: Example, depth: number): unknown[] {
  const prefix = Array.isArray(schema.prefixItems)
    ? schema.prefixItems
    : Array.isArray(schema.items)
      ? schema.items
      : [];
  const wanted = typeof schema.minItems === "number" ? schema.minItems : 0;
  const count = Math.min(Math.max(wanted, 0), EXAMPLE_ITEMS_MAX);
  const items: unknown[] = [];
  for (let index = 0; index < count && example.values < EXAMPLE_VALUES_MAX; index++) {
    const item =
      index < prefix.length ? prefix[index] : Array.isArray(schema.items) ? schema.additionalItems : schema.items;
    items.push(exampleOf(item, example, depth + 1));
  }
  return items;
}
