import { z } from "zod";
import type { EventHub } from "../durable-objects/event-hub.ts";
import type { ProviderBreaker } from "../durable-objects/provider-breaker.ts";
import type { WorkspaceLimiter } from "../durable-objects/workspace-limiter.ts";
import { TASK_TYPES, type TaskType } from "./db/schema.ts";
import { chainProblems } from "./llm/routing.ts";

/**
 * The Worker's environment, checked once per isolate at the door so a
 * misconfigured deployment answers a clear `BAD_ENVIRONMENT` problem instead of
 * failing somewhere deep inside a request.
 */

const binding = <T>(name: string) =>
  z.custom<T>((value) => typeof value === "object" && value !== null, {
    message: `binding ${name} is missing`,
  });

// A name set to nothing is unset (see withoutBlanks), so these never see "".
const optionalUrl = z.url({ protocol: /^https?$/ }).optional();
const optionalSecret = z.string().optional();

/**
 * A provider's key, sent as a header: one with a line break or another control character inside it (a secret
 * pasted with two lines) made every call fail before it left, as "connection to the provider failed: Invalid
 * header value", retried and counted against the provider's breaker as an outage. The whitespace around a key
 * is no such character: a header's value is trimmed of it.
 */
const providerKey = z
  .string()
  .refine(
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is looked for
    (value) => !/[\u0000-\u0008\u000a-\u001f\u007f]/.test(value.replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, "")),
    "contains a line break or another control character, which a request header cannot carry",
  )
  .optional();

/**
 * A provider's base URL, to which its adapter appends its own path: a query or fragment there ended up
 * before that path (`…/v1?x=1/chat/completions`), and a URL given with the path the adapter appends (as the
 * provider's docs show the endpoint) was called at it twice (`…/v1/chat/completions/chat/completions`), a 404
 * the router took for the provider refusing the request, telling the caller its request was bad. `home` is
 * the provider's own URL, which has one right path (`https://api.openai.com` alone was called at
 * …/chat/completions, a 404 likewise).
 */
const providerBaseUrl = (appended: string, givenWith: RegExp, without: string, home?: URL) =>
  z
    .url({ protocol: /^https?$/ })
    .superRefine((value, ctx) => {
      let url: URL;
      try {
        url = new URL(value);
      } catch {
        return; // z.url said so already
      }
      if (url.search !== "" || url.hash !== "") {
        ctx.addIssue({ code: "custom", message: `no query or fragment: ${appended} is appended to the URL` });
      } else if (givenWith.test(url.pathname.replace(/\/+$/, ""))) {
        ctx.addIssue({ code: "custom", message: `give the URL without ${without}: ${appended} is appended to it` });
      } else if (home && url.host === home.host && url.pathname.replace(/\/+$/, "") !== home.pathname) {
        ctx.addIssue({ code: "custom", message: `${home.host}'s URL is ${home.href}` });
      }
    })
    .optional();

/** Azure's API versions: a day, GA (`2024-10-21`) or `-preview`, or the v1 API's `preview` and `latest`. */
const AZURE_API_VERSION = /^(\d{4}-\d{2}-\d{2}(-preview)?|preview|latest)$/;

export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const EnvSchema = z
  .object({
    DB: binding<D1Database>("DB"),
    WORKSPACE_LIMITER: binding<DurableObjectNamespace<WorkspaceLimiter>>("WORKSPACE_LIMITER"),
    EVENT_HUB: binding<DurableObjectNamespace<EventHub>>("EVENT_HUB"),
    TASKS_QUEUE: binding<Queue>("TASKS_QUEUE"),
    TASKS_DLQ: binding<Queue>("TASKS_DLQ"),
    ARTIFACTS: binding<R2Bucket>("ARTIFACTS"),
    METRICS: binding<AnalyticsEngineDataset>("METRICS").optional(),
    PROVIDER_BREAKER: binding<DurableObjectNamespace<ProviderBreaker>>("PROVIDER_BREAKER"),
    /** Workers AI. Not bound in wrangler.toml: under `wrangler dev` it needs a Cloudflare account (src/llm/adapters/workers-ai.ts). */
    AI: binding<Ai>("AI").optional(),

    ENVIRONMENT: z.enum(["development", "test", "staging", "production"]).default("development"),
    LOG_LEVEL: z.enum(LOG_LEVELS).default("info"),
    LOG_SAMPLE_RATE: z.coerce.number().min(0).max(1).default(1),
    MAX_BODY_BYTES: z.coerce
      .number()
      .int()
      .positive()
      .default(1024 * 1024),
    CORS_ORIGINS: z.string().default(""),
    ADMIN_TOKEN: optionalSecret,
    JWT_JWKS_URL: optionalUrl,
    JWT_SECRET: optionalSecret,
    JWT_ISSUER: optionalSecret,
    JWT_AUDIENCE: optionalSecret,

    OTEL_EXPORTER_OTLP_ENDPOINT: optionalUrl,
    OTEL_EXPORTER_OTLP_HEADERS: optionalSecret,
    OTEL_SERVICE_NAME: z.string().min(1).default("mgx-ai-edge"),

    SENTRY_DSN: optionalUrl,
    SENTRY_ENVIRONMENT: optionalSecret,
    SENTRY_RELEASE: optionalSecret,

    /** `provider` or `provider:model`, comma-separated (src/llm/routing.ts parseChain), checked as a workspace's chain is. */
    LLM_DEFAULT_CHAIN: z
      .string()
      .default("simulated")
      .superRefine((value, ctx) => {
        for (const message of chainProblems(value)) ctx.addIssue({ code: "custom", message });
      }),
    OPENAI_API_KEY: providerKey,
    OPENAI_BASE_URL: providerBaseUrl(
      "/chat/completions",
      /\/chat\/completions$/i,
      "/chat/completions",
      new URL("https://api.openai.com/v1"),
    ),
    ANTHROPIC_API_KEY: providerKey,
    ANTHROPIC_BASE_URL: providerBaseUrl("/v1/messages", /\/v1(\/messages)?$/i, "/v1"),
    AZURE_OPENAI_API_KEY: providerKey,
    AZURE_OPENAI_ENDPOINT: optionalUrl,
    AZURE_OPENAI_API_VERSION: z
      .string()
      .regex(AZURE_API_VERSION, "an API version such as 2024-10-21, 2024-12-01-preview or preview")
      .optional(),
    LOCAL_LLM_BASE_URL: providerBaseUrl("/chat/completions", /\/chat\/completions$/i, "/chat/completions"),
    /** Sent as a bearer token: vLLM's `--api-key`, LM Studio's and llama.cpp's keys, a gateway in front of Ollama. */
    LOCAL_LLM_API_KEY: providerKey,
    /**
     * Each provider attempt's wait for the provider: a stream's until its first chunk, then between chunks (a long
     * whole answer is asked as a stream; a reasoning model that thinks in silence gets longer for its first chunk).
     */
    LLM_ATTEMPT_TIMEOUT_MS: z.coerce.number().int().positive().max(600_000).default(60_000),

    /**
     * Run timeouts per task type, overriding the defaults (src/tasks/config.ts):
     * `code_generation=900,testing=840`. At most 900 s, a queue consumer's wall-clock limit.
     */
    TASK_TIMEOUT_SECONDS: z
      .string()
      .default("")
      .transform((value, ctx) => {
        const parsed = parseTaskTimeouts(value);
        if (typeof parsed === "string") {
          ctx.addIssue({ code: "custom", message: parsed });
          return z.NEVER;
        }
        return parsed;
      }),

    /** Registers `/__debug/*` routes (deliberate failures, test and benchmark helpers); refused in staging and production. */
    ENABLE_DEBUG_ROUTES: z
      .enum(["true", "false", ""])
      .default("false")
      .transform((value) => value === "true"),
  })
  .superRefine((env, ctx) => {
    // They ask for no credentials and act on any workspace named in the body (a WebSocket ticket to its events,
    // events published into it, artifacts written to its tasks): for tests and benchmarks on this machine only,
    // never on a deployed Worker, staging's included.
    if ((env.ENVIRONMENT === "production" || env.ENVIRONMENT === "staging") && env.ENABLE_DEBUG_ROUTES) {
      ctx.addIssue({
        code: "custom",
        path: ["ENABLE_DEBUG_ROUTES"],
        message: `debug routes cannot be enabled in ${env.ENVIRONMENT}`,
      });
    }
    if (env.ADMIN_TOKEN !== undefined && env.ADMIN_TOKEN.length < 16) {
      ctx.addIssue({ code: "custom", path: ["ADMIN_TOKEN"], message: "ADMIN_TOKEN must be at least 16 characters" });
    }
    if (env.JWT_SECRET !== undefined && env.JWT_SECRET.length < 32) {
      ctx.addIssue({ code: "custom", path: ["JWT_SECRET"], message: "JWT_SECRET must be at least 32 characters" });
    }
    if ((env.JWT_JWKS_URL || env.JWT_SECRET) && (!env.JWT_ISSUER || !env.JWT_AUDIENCE)) {
      ctx.addIssue({
        code: "custom",
        path: ["JWT_ISSUER"],
        message: "JWT_ISSUER and JWT_AUDIENCE are required when JWT verification is configured",
      });
    }
    // A provider's settings given in part: the provider was absent without a word (GET /api/v1/providers said
    // `configured: false`, no more), and each call the chain sent there refused as the caller's fault.
    for (const [given, needed] of [
      ["AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"],
      ["AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY"],
      ["ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"],
      ["LOCAL_LLM_API_KEY", "LOCAL_LLM_BASE_URL"],
    ] as const) {
      if (env[given] !== undefined && env[needed] === undefined) {
        ctx.addIssue({
          code: "custom",
          path: [needed],
          message: `${needed} is required with ${given}: without it the provider is not configured`,
        });
      }
    }
    if (env.ENVIRONMENT === "production" && !env.ADMIN_TOKEN) {
      ctx.addIssue({ code: "custom", path: ["ADMIN_TOKEN"], message: "ADMIN_TOKEN secret is required in production" });
    }
  });

export type AppConfig = z.output<typeof EnvSchema>;

const MAX_TASK_TIMEOUT_SECONDS = 900;

/** `type=seconds,…` → the overrides, or what is wrong with it (never the whole value). */
function parseTaskTimeouts(value: string): Partial<Record<TaskType, number>> | string {
  const overrides: Partial<Record<TaskType, number>> = {};
  for (const part of value.split(",").map((item) => item.trim())) {
    if (part === "") continue;
    const [type, seconds] = part.split("=").map((item) => item.trim());
    if (!(TASK_TYPES as readonly string[]).includes(type)) return `unknown task type; known: ${TASK_TYPES.join(", ")}`;
    const number = Number(seconds);
    if (!Number.isInteger(number) || number < 1 || number > MAX_TASK_TIMEOUT_SECONDS) {
      return `${type}: seconds must be an integer from 1 to ${MAX_TASK_TIMEOUT_SECONDS}`;
    }
    overrides[type as TaskType] = number;
  }
  return overrides;
}

/** What the Worker receives: bindings plus string vars and secrets. */
export type WorkerEnv = z.input<typeof EnvSchema> & Record<string, unknown>;

export type EnvCheck = { ok: true; config: AppConfig } | { ok: false; problems: { path: string; message: string }[] };

// The env object is stable for an isolate's lifetime, so parse it once.
const parsedByEnv = new WeakMap<object, EnvCheck>();

/**
 * A name set to nothing (`NAME=` left in a `.dev.vars` copied from the example, an empty secret, or the
 * tests' shadow of a developer's own values) means unset: its default applies, as if it were absent.
 */
function withoutBlanks(env: WorkerEnv): WorkerEnv {
  return Object.fromEntries(Object.entries(env).filter(([, value]) => value !== "")) as WorkerEnv;
}

export function checkEnv(env: WorkerEnv): EnvCheck {
  const cached = parsedByEnv.get(env);
  if (cached) return cached;
  const parsed = EnvSchema.safeParse(withoutBlanks(env));
  const result: EnvCheck = parsed.success
    ? { ok: true, config: parsed.data }
    : {
        ok: false,
        // Names and reasons only: a bad value may be a secret.
        problems: parsed.error.issues.map((issue) => ({
          path: issue.path.join("."),
          message: issue.message,
        })),
      };
  parsedByEnv.set(env, result);
  return result;
}
