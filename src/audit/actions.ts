/**
 * The closed catalogue of audit actions. Adding one is a code change on
 * purpose: queries validate `?action=` against it, and the coverage test
 * (test/unit/audit/coverage.test.ts) checks that every mutating route's
 * `x-audit-action` names one of these.
 */
export const AUDIT_ACTIONS = {
  "workspace.create": "An operator created a workspace (and its first API key).",
  "workspace.update": "A workspace's plan, limits or LLM routing changed.",
  "workspace.delete": "A workspace was deleted.",
  "api_key.create": "An API key was created; the key itself is never recorded.",
  "api_key.revoke": "An API key was revoked.",
  "task.create": "A task was submitted.",
  "task.cancel": "A task's cancellation was requested.",
  "task.dead_lettered": "A task exhausted its retries and went to the dead-letter queue.",
  "dead_letter.replay": "Dead-lettered tasks were replayed.",
  "budget.update": "A workspace's token or cost budgets changed.",
  "workflow.create": "A workflow definition was created.",
  "workflow.update": "A workflow definition changed.",
  "workflow.delete": "A workflow definition was deleted.",
  "workflow.execute": "A workflow execution was started (by a caller or a webhook).",
  "webhook.receive": "A signed webhook was accepted.",
  "event_ticket.create": "A single-use WebSocket ticket was issued.",
  // No longer written (completions are usage rows; the route is x-audit-exempt): kept so older entries stay queryable.
  "llm.completion": "A chat completion was requested through the router.",
  "audit.export": "The audit log was exported.",
  "audit.archive": "Retention archived expired entries to R2 and cut them from the log.",
  "auth.failed": "Authentication failed with credentials that name this workspace.",
  "security.blocked": "A client was blocked after repeated failures or probing.",
  "security.suspicious_activity": "Suspicious use was noticed but not blocked.",
} as const satisfies Record<string, string>;

export type AuditAction = keyof typeof AUDIT_ACTIONS;

export const AUDIT_ACTION_NAMES = Object.keys(AUDIT_ACTIONS) as [AuditAction, ...AuditAction[]];

export function isAuditAction(value: string): value is AuditAction {
  return Object.hasOwn(AUDIT_ACTIONS, value);
}

/**
 * The OpenAPI operation extension that declares which action a mutating route
 * records: `createRoute({ ..., "x-audit-action": "task.create" })`.
 * @hono/zod-openapi copies `x-` keys of a route config into the operation.
 */
export const AUDIT_ACTION_EXTENSION = "x-audit-action";

/**
 * The extension a mutating route declares instead when it records no audit
 * entry on purpose, with the reason: `"x-audit-exempt": "why"`. For calls
 * that change no configuration and are recorded elsewhere per call (a chat
 * completion is a usage row). The coverage test lists every exemption.
 */
export const AUDIT_EXEMPT_EXTENSION = "x-audit-exempt";
