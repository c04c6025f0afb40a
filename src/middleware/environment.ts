import type { MiddlewareHandler } from "hono";
import { checkEnv } from "../env.ts";
import { ApiError } from "../lib/problem.ts";
import type { HonoEnv } from "../types.ts";

/** Refuses every request with a clear problem while the deployment's env is invalid. */
export const environment: MiddlewareHandler<HonoEnv> = async (c, next) => {
  const result = checkEnv(c.env);
  if (!result.ok) {
    c.get("logger").error("environment is misconfigured", { problems: result.problems });
    throw new ApiError("BAD_ENVIRONMENT", "The server's environment is misconfigured.", {
      errors: result.problems,
    });
  }
  c.set("config", result.config);
  await next();
};
