export {
  type AuditEvent,
  type AuditEventInput,
  type AuditEventType,
  type AuditSession,
  type AuditSink,
  type AuditStore,
  canonicalEvent,
  hashEvent,
  openAuditStore,
  type SessionEnd,
  type SessionFilter,
  type SessionStart,
} from "./store.ts";
