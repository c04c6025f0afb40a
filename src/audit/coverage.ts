import { AUDIT_ACTION_EXTENSION, AUDIT_EXEMPT_EXTENSION, isAuditAction } from "./actions.ts";

/**
 * Audit coverage of the API: every mutating operation (POST, PUT, PATCH,
 * DELETE) in the OpenAPI document declares the action it records with the
 * `x-audit-action` extension, and that action is in the catalogue, or says
 * why it records none with `x-audit-exempt` (a non-empty reason; see
 * `auditExemptions`). Debug routes (`/__debug`) are exempt. The test that walks the real document is
 * test/unit/audit/coverage.test.ts.
 */

const MUTATING_METHODS = ["post", "put", "patch", "delete"] as const;
const EXEMPT_PREFIXES = ["/__debug"];

export interface CoverageGap {
  method: string;
  path: string;
  problem: string;
}

export function auditCoverageGaps(document: { paths?: Record<string, unknown> }): CoverageGap[] {
  const gaps: CoverageGap[] = [];
  for (const [path, item] of Object.entries(document.paths ?? {})) {
    if (EXEMPT_PREFIXES.some((prefix) => path.startsWith(prefix))) continue;
    const operations = (item ?? {}) as Record<string, Record<string, unknown> | undefined>;
    for (const method of MUTATING_METHODS) {
      const operation = operations[method];
      if (!operation) continue;
      const action = operation[AUDIT_ACTION_EXTENSION];
      const exempt = operation[AUDIT_EXEMPT_EXTENSION];
      if (exempt !== undefined && action !== undefined) {
        gaps.push({
          method: method.toUpperCase(),
          path,
          problem: `both ${AUDIT_ACTION_EXTENSION} and ${AUDIT_EXEMPT_EXTENSION}`,
        });
      } else if (exempt !== undefined) {
        if (typeof exempt !== "string" || exempt.trim() === "") {
          gaps.push({ method: method.toUpperCase(), path, problem: `${AUDIT_EXEMPT_EXTENSION} without a reason` });
        }
      } else if (action === undefined) {
        gaps.push({ method: method.toUpperCase(), path, problem: `no ${AUDIT_ACTION_EXTENSION}` });
      } else if (typeof action !== "string" || !isAuditAction(action)) {
        gaps.push({ method: method.toUpperCase(), path, problem: `unknown audit action ${JSON.stringify(action)}` });
      }
    }
  }
  return gaps;
}

/** The mutating operations that record no audit entry, as "METHOD path" → reason. */
export function auditExemptions(document: { paths?: Record<string, unknown> }): Record<string, string> {
  const exemptions: Record<string, string> = {};
  for (const [path, item] of Object.entries(document.paths ?? {})) {
    const operations = (item ?? {}) as Record<string, Record<string, unknown> | undefined>;
    for (const method of MUTATING_METHODS) {
      const reason = operations[method]?.[AUDIT_EXEMPT_EXTENSION];
      if (reason !== undefined) exemptions[`${method.toUpperCase()} ${path}`] = String(reason);
    }
  }
  return exemptions;
}
