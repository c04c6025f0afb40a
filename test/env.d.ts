import type { D1Migration } from "cloudflare:test";
import type { WorkerEnv } from "../src/env.ts";

declare global {
  namespace Cloudflare {
    interface GlobalProps {
      mainModule: typeof import("../src/index.ts");
      durableNamespaces: "WorkspaceLimiter" | "EventHub" | "ProviderBreaker";
    }
    interface Env extends WorkerEnv {
      /** Migrations read by vitest.config.ts, applied by test/apply-migrations.ts. */
      TEST_MIGRATIONS: D1Migration[];
      /** An empty D1 database that no setup file migrates. */
      MIGRATIONS_TEST_DB: D1Database;
    }
  }
}
