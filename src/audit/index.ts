/** The audit log: see src/audit/audit-logger.ts for how entries are written and chained. */
export {
  AUDIT_ACTION_EXTENSION,
  AUDIT_ACTION_NAMES,
  AUDIT_ACTIONS,
  AUDIT_EXEMPT_EXTENSION,
  type AuditAction,
  isAuditAction,
} from "./actions.ts";
export {
  ANONYMOUS_ACTOR,
  type AuditActor,
  type AuditActorType,
  type AuditEntryInput,
  auditContext,
  auditInsert,
  auditInsertIf,
  auditStatement,
  recordAudit,
  sealAfterResponse,
  writesNoAudit,
} from "./audit-logger.ts";
export { sealChain, type VerifyReport, verifyChain } from "./chain.ts";
export { auditCoverageGaps, auditExemptions } from "./coverage.ts";
export { runAuditRetention } from "./retention.ts";
