import type { AppConfig } from "../../env.ts";
import type { ProviderAdapter } from "../provider.ts";
import { AnthropicAdapter } from "./anthropic.ts";
import { OpenAiCompatibleAdapter } from "./openai.ts";
import { SimulatedAdapter } from "./simulated.ts";
import { WorkersAiAdapter } from "./workers-ai.ts";

/**
 * The providers this deployment can call, from its configuration: a provider
 * without its secrets is simply absent, and a routing chain that names it
 * skips it. `simulated` is always present.
 */

/** What configures each provider (buildAdapters), as GET /ready and GET /api/v1/providers name it; simulated: nothing. */
export const PROVIDER_SETTINGS: Readonly<Record<string, string>> = {
  openai: "OPENAI_API_KEY or OPENAI_BASE_URL",
  azure: "AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT",
  anthropic: "ANTHROPIC_API_KEY",
  "workers-ai": "the AI binding",
  local: "LOCAL_LLM_BASE_URL",
};

/** A provider with what configures it, `anthropic (ANTHROPIC_API_KEY)`: how /ready and a refused call name what to put. */
export function providerWithSettings(provider: string): string {
  return `${provider} (${PROVIDER_SETTINGS[provider] ?? "no such provider"})`;
}

const built = new WeakMap<object, ReadonlyMap<string, ProviderAdapter>>();

export function buildAdapters(config: AppConfig): ReadonlyMap<string, ProviderAdapter> {
  const cached = built.get(config);
  if (cached) return cached;
  const adapters = new Map<string, ProviderAdapter>();
  adapters.set("simulated", new SimulatedAdapter());
  if (config.OPENAI_API_KEY || config.OPENAI_BASE_URL) {
    adapters.set(
      "openai",
      new OpenAiCompatibleAdapter({
        name: "openai",
        baseUrl: config.OPENAI_BASE_URL ?? "https://api.openai.com/v1",
        apiKey: config.OPENAI_API_KEY,
      }),
    );
  }
  if (config.AZURE_OPENAI_API_KEY && config.AZURE_OPENAI_ENDPOINT) {
    adapters.set(
      "azure",
      new OpenAiCompatibleAdapter({
        name: "azure",
        baseUrl: config.AZURE_OPENAI_ENDPOINT,
        apiKey: config.AZURE_OPENAI_API_KEY,
        apiVersion: config.AZURE_OPENAI_API_VERSION,
      }),
    );
  }
  if (config.LOCAL_LLM_BASE_URL) {
    adapters.set(
      "local",
      new OpenAiCompatibleAdapter({
        name: "local",
        baseUrl: config.LOCAL_LLM_BASE_URL,
        apiKey: config.LOCAL_LLM_API_KEY,
      }),
    );
  }
  if (config.ANTHROPIC_API_KEY) {
    adapters.set(
      "anthropic",
      new AnthropicAdapter({ apiKey: config.ANTHROPIC_API_KEY, baseUrl: config.ANTHROPIC_BASE_URL }),
    );
  }
  if (config.AI) adapters.set("workers-ai", new WorkersAiAdapter(config.AI as never));
  built.set(config, adapters);
  return adapters;
}

/** Names of the providers configured here, for GET /api/v1/providers. */
export function configuredProviders(config: AppConfig): string[] {
  return [...buildAdapters(config).keys()];
}
