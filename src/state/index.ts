/** The login state shared by the gateways of one cluster (or kept per node in SQLite). */

export {
  type AuditReplica,
  openAuditReplica,
  type ReplicaCheckpointRow,
  ReplicaDivergedError,
  type ReplicaEventRow,
  type ReplicaRecordingRow,
  type ReplicaSessionRow,
} from "./audit-replica.ts";
export { assertKnownVersion, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, STATE_SCHEMA_VERSION } from "./migrations.ts";
export { type OpenStateOptions, openState, postgresUrl, readStateUrl, type StateSettings } from "./open.ts";
export { migratePostgres, openPostgresState, type PostgresOptions, redactUrl } from "./postgres.ts";
export { migrateSqlite, openSqliteState } from "./sqlite.ts";
export {
  type AuthState,
  type AuthStateDump,
  type LockWindow,
  type RememberedRow,
  type SealedSecret,
  type SecretRow,
  type StateEngine,
  StateError,
  withStateErrors,
} from "./types.ts";
