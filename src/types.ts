import type { Principal } from "./auth/principal.ts";
import type { WorkspaceLimits } from "./db/schema.ts";
import type { AppConfig, WorkerEnv } from "./env.ts";
import type { Logger } from "./lib/logger.ts";
import type { TraceIds } from "./lib/trace-context.ts";

/** What every handler finds on the Hono context, typed once. */
export interface HonoEnv {
  Bindings: WorkerEnv;
  Variables: {
    requestId: string;
    trace: TraceIds;
    logger: Logger;
    /** The checked environment; set by the environment middleware. */
    config: AppConfig;
    /** Set by authentication once the caller's workspace is known. */
    workspaceId?: string;
    /** Set by authentication (src/middleware/auth.ts). */
    principal?: Principal;
    /** The caller's workspace limits (null for the operator); set by authentication. */
    limits?: WorkspaceLimits | null;
    /** Set by `writesNoAudit` on routes declared `x-audit-exempt`: nothing to seal after them. */
    auditExempt?: boolean;
  };
}
