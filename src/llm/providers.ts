import type { AppConfig } from "../env.ts";
import { buildAdapters, PROVIDER_SETTINGS } from "./adapters/index.ts";
import type { BreakerSnapshot } from "./breaker-book.ts";
import { answerWithin, TRIAL_ANSWER_TIMEOUT_MS } from "./breaker-client.ts";
import type { BreakerView } from "./breaker-core.ts";
import { breakerClientFor } from "./index.ts";
import { type PriceSource, priceInForce } from "./prices.ts";
import { DEFAULT_MODELS, type RouteTarget, stripQuery } from "./routing.ts";

/** What GET /api/v1/providers shows: each provider, whether it is configured, and its models' breakers. */

export interface ModelHealth {
  model: string;
  in_chain: boolean;
  state: BreakerView["state"];
  error_rate: number;
  calls_last_minute: number;
  consecutive_failures: number;
  opened_at: string | null;
  retry_at: string | null;
  last_error: string | null;
  input_per_million_usd: number;
  cached_input_per_million_usd: number | null;
  output_per_million_usd: number;
  price_source: PriceSource;
}

export interface ProviderHealth {
  provider: string;
  configured: boolean;
  /** The settings that configure it (PROVIDER_SETTINGS); null for `simulated`, always configured. */
  configured_by: string | null;
  simulated: boolean;
  models: ModelHealth[];
}

const CLOSED_VIEW: BreakerView = {
  state: "closed",
  errorRate: 0,
  calls: 0,
  consecutiveFailures: 0,
  openedAtMs: null,
  retryAtMs: null,
  lastError: null,
};

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** Every provider the router knows, then any other this deployment has or the chain names, in a stable order. */
export function providerNames(config: AppConfig, chain: RouteTarget[]): string[] {
  const configured = buildAdapters(config).keys();
  return [...new Set([...Object.keys(DEFAULT_MODELS), ...configured, ...chain.map((target) => target.provider)])];
}

/**
 * Breakers are shared by every workspace (a provider's health is everyone's), but which models the others
 * call, and how often, is theirs: beside its chain, a workspace sees only the models it was charged for
 * lately (`usedLately`: a request naming one, a chain since changed), never another tenant's.
 */
export async function providerOverview(
  config: AppConfig,
  chain: RouteTarget[],
  usedLately: RouteTarget[],
  /** The providers to show (a page of providerNames'). */
  names: readonly string[],
): Promise<ProviderHealth[]> {
  const adapters = buildAdapters(config);
  return Promise.all(
    names.map(async (provider) => {
      const adapter = adapters.get(provider);
      // Models as the chain names them: a simulated model's settings (`sim-1?failure_rate=1`) make it a
      // target of its own, with its own breaker, which must not stand in for the plain model's.
      const chainTargets = chain.filter((target) => target.provider === provider);
      const chainModels = chainTargets.map((target) => target.model);
      const ownPrices = new Map(chainTargets.map((target) => [target.model, target.ownPrice]));
      const used = new Set(usedLately.filter((target) => target.provider === provider).map((target) => target.model));
      // Chain entries are shown even when this deployment lacks the provider's secrets: another may have them.
      const shown = [...new Set([...chainModels, ...used])];
      let snapshot: BreakerSnapshot[] = [];
      if (shown.length > 0) {
        // Only the rows shown are read: the book holds every model any workspace named. Waited for as long as a
        // call waits for its trial: an object that hangs rather than fails held the whole overview with it.
        const shared = await answerWithin(
          config.PROVIDER_BREAKER.getByName(provider).snapshot(undefined, shown),
          TRIAL_ANSWER_TIMEOUT_MS,
        );
        if (shared) snapshot = shared as typeof snapshot;
        else {
          // The breaker object is unreachable or silent: this isolate's copies (the router's, which decide its
          // calls meanwhile), where it has them. Shown closed, a breaker open here read as healthy through the outage.
          const local = breakerClientFor(config);
          snapshot = shown.flatMap((model) => {
            const view = local.copyOf(`${provider}:${model}`);
            return view ? [{ model, view, lastRecordedAtMs: 0 }] : [];
          });
        }
      }
      const views = new Map(snapshot.map((entry) => [entry.model, entry.view]));
      const models = [...new Set([...chainModels, ...views.keys()])].sort().map((model) => {
        const view = views.get(model) ?? CLOSED_VIEW;
        // The price this workspace's calls to it are charged: its chain entry's own, else the table's.
        const price = ownPrices.get(model) ?? priceInForce(provider, stripQuery(model));
        return {
          model,
          in_chain: chainModels.includes(model),
          state: view.state,
          error_rate: Math.round(view.errorRate * 1000) / 1000,
          calls_last_minute: view.calls,
          consecutive_failures: view.consecutiveFailures,
          opened_at: iso(view.openedAtMs),
          retry_at: iso(view.retryAtMs),
          last_error: view.lastError,
          input_per_million_usd: price.inputPerMillionUsd,
          cached_input_per_million_usd: price.cachedInputPerMillionUsd ?? null,
          output_per_million_usd: price.outputPerMillionUsd,
          price_source: price.source,
        };
      });
      return {
        provider,
        configured: adapter !== undefined,
        configured_by: PROVIDER_SETTINGS[provider] ?? null,
        simulated: adapter?.simulated ?? provider === "simulated",
        models,
      };
    }),
  );
}
