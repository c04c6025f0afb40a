import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";
import { shadowLocalSecrets } from "./test/local-secrets.ts";

export default defineConfig({
  test: {
    projects: [
      {
        // Unit and integration tests inside workerd, with real D1, DOs, Queues and R2.
        plugins: [
          cloudflareTest(async () => ({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              bindings: {
                ...shadowLocalSecrets(import.meta.dirname),
                ENVIRONMENT: "test",
                ENABLE_DEBUG_ROUTES: "true",
                ADMIN_TOKEN: "test-admin-token-0123456789abcdef",
                JWT_SECRET: "test-jwt-secret-0123456789abcdef0123456789",
                JWT_ISSUER: "https://issuer.test",
                JWT_AUDIENCE: "mgx-edge-api",
                TEST_MIGRATIONS: await readD1Migrations("./migrations"),
              },
              // An empty database for tests that migrate step by step (test/integration/migrations.test.ts).
              d1Databases: ["MIGRATIONS_TEST_DB"],
            },
          })),
        ],
        test: {
          name: "workers",
          include: ["test/unit/**/*.test.ts", "test/integration/**/*.test.ts"],
          // A limit against hangs, not a speed check (benchmarks measure speed): some router tests wait out real
          // timeouts and backoffs for seconds, and the default 5 s failed one of them on a loaded 2-core machine.
          testTimeout: 20_000,
          setupFiles: ["./test/apply-migrations.ts"],
        },
      },
      {
        // End-to-end: real `wrangler dev` processes on loopback, driven from Node.
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          environment: "node",
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
