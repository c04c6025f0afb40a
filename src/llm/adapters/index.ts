import type { AppConfig } from "../../env.ts";
import type { ProviderAdapter } from "../provider.ts";
import { SimulatedAdapter } from "./simulated.ts";

/**
 * The providers this deployment can call, from its configuration: a provider
 * without its secrets is simply absent, and a routing chain that names it
 * skips it. `simulated` is always present.
 */

const built = new WeakMap<object, ReadonlyMap<string, ProviderAdapter>>();

export function buildAdapters(config: AppConfig): ReadonlyMap<string, ProviderAdapter> {
  const cached = built.get(config);
  if (cached) return cached;
  const adapters = new Map<string, ProviderAdapter>();
  adapters.set("simulated", new SimulatedAdapter());
  built.set(config, adapters);
  return adapters;
}
