/**
 * Numbered schema migrations of the login state, one list per engine (the same versions mean the
 * same tables). A database records its version in `schema_version`; a version above
 * {@link STATE_SCHEMA_VERSION} (written by a newer varco) is refused, never downgraded.
 *
 * SQLite version 1 is exactly the schema of the releases before versioning (every statement is
 * `IF NOT EXISTS`), so an existing `state.db` without `schema_version` counts as version 0 and
 * migrates in place without touching its rows.
 */
import { StateError } from "./types.ts";

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

export const SQLITE_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "login state: TOTP secrets, used steps, recovery codes, invitations, lockout failures",
    sql: `
CREATE TABLE IF NOT EXISTS totp_steps (uid TEXT PRIMARY KEY, last_step INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS recovery_codes (uid TEXT NOT NULL, code_hash TEXT NOT NULL, used_at TEXT, PRIMARY KEY (uid, code_hash));
CREATE TABLE IF NOT EXISTS totp (
  uid TEXT PRIMARY KEY,
  nonce BLOB NOT NULL,
  ciphertext BLOB NOT NULL,
  tag BLOB NOT NULL,
  last_step INTEGER,
  created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS totp_invitations (
  uid TEXT PRIMARY KEY,
  code_mac TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_failures (uid TEXT NOT NULL, source TEXT NOT NULL, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS auth_failures_uid ON auth_failures(uid, at);
CREATE INDEX IF NOT EXISTS auth_failures_source ON auth_failures(source, at);
`,
  },
  {
    version: 2,
    name: "state_meta: facts every node must agree on (the check value of totp.key)",
    sql: "CREATE TABLE IF NOT EXISTS state_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);",
  },
  {
    version: 3,
    name: "audit trail of every node (PostgreSQL only: with SQLite each node keeps its audit in audit.db)",
    sql: "SELECT 1;",
  },
  {
    version: 4,
    name: "mfa_remembered: second factors remembered per (uid, key fingerprint, source network) until an expiry (auth.totp.remember)",
    sql: `
CREATE TABLE IF NOT EXISTS mfa_remembered (
  uid TEXT NOT NULL,
  key_fp TEXT NOT NULL,
  source_net TEXT NOT NULL,
  created_at_ms INTEGER NOT NULL,
  expires_at_ms INTEGER NOT NULL,
  PRIMARY KEY (uid, key_fp, source_net)
);
CREATE INDEX IF NOT EXISTS mfa_remembered_expiry ON mfa_remembered(expires_at_ms);
`,
  },
  {
    version: 5,
    name: "mfa_remembered.totp_binding: a remembered factor is bound to the TOTP secret it stood in for (entries from before bind to nothing and are never honoured)",
    sql: "ALTER TABLE mfa_remembered ADD COLUMN totp_binding TEXT NOT NULL DEFAULT '';",
  },
];

export const POSTGRES_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "login state: TOTP secrets, used steps, recovery codes, invitations, lockout failures",
    sql: `
CREATE TABLE IF NOT EXISTS totp_steps (uid TEXT PRIMARY KEY, last_step BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS recovery_codes (uid TEXT NOT NULL, code_hash TEXT NOT NULL, used_at TEXT, PRIMARY KEY (uid, code_hash));
CREATE TABLE IF NOT EXISTS totp (
  uid TEXT PRIMARY KEY,
  nonce BYTEA NOT NULL,
  ciphertext BYTEA NOT NULL,
  tag BYTEA NOT NULL,
  last_step BIGINT,
  created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS totp_invitations (
  uid TEXT PRIMARY KEY,
  code_mac TEXT NOT NULL,
  expires_at BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_failures (id BIGSERIAL PRIMARY KEY, uid TEXT NOT NULL, source TEXT NOT NULL, at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS auth_failures_uid ON auth_failures(uid, at);
CREATE INDEX IF NOT EXISTS auth_failures_source ON auth_failures(source, at);
`,
  },
  {
    version: 2,
    name: "state_meta: facts every node must agree on (the check value of totp.key)",
    sql: "CREATE TABLE IF NOT EXISTS state_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);",
  },
  {
    version: 3,
    name: "audit trail of every node (PostgreSQL only: with SQLite each node keeps its audit in audit.db)",
    sql: `
CREATE TABLE IF NOT EXISTS audit_events (
  node TEXT NOT NULL,
  id BIGINT NOT NULL,
  ts TEXT NOT NULL,
  type TEXT NOT NULL,
  session_id TEXT,
  uid TEXT,
  account TEXT,
  target TEXT,
  source TEXT,
  result TEXT,
  data TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL,
  PRIMARY KEY (node, id)
);
CREATE INDEX IF NOT EXISTS audit_events_session ON audit_events(session_id);
CREATE TABLE IF NOT EXISTS audit_sessions (
  node TEXT NOT NULL,
  id TEXT NOT NULL,
  started_at TEXT NOT NULL,
  ended_at TEXT,
  uid TEXT NOT NULL,
  account TEXT NOT NULL,
  target TEXT,
  source TEXT NOT NULL,
  result TEXT NOT NULL,
  up_bytes BIGINT NOT NULL,
  down_bytes BIGINT NOT NULL,
  exit_status INTEGER,
  PRIMARY KEY (node, id)
);
CREATE INDEX IF NOT EXISTS audit_sessions_started ON audit_sessions(started_at);
CREATE TABLE IF NOT EXISTS audit_recordings (
  node TEXT NOT NULL,
  session_id TEXT NOT NULL,
  channel INTEGER NOT NULL,
  path TEXT NOT NULL,
  sha256 TEXT,
  bytes BIGINT NOT NULL,
  status TEXT NOT NULL,
  PRIMARY KEY (node, session_id, channel)
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
  node TEXT NOT NULL,
  id BIGINT NOT NULL,
  ts TEXT NOT NULL,
  pruned_through_id BIGINT NOT NULL,
  last_hash TEXT NOT NULL,
  PRIMARY KEY (node, id)
);
`,
  },
  {
    version: 4,
    name: "mfa_remembered: second factors remembered per (uid, key fingerprint, source network) until an expiry (auth.totp.remember)",
    sql: `
CREATE TABLE IF NOT EXISTS mfa_remembered (
  uid TEXT NOT NULL,
  key_fp TEXT NOT NULL,
  source_net TEXT NOT NULL,
  created_at_ms BIGINT NOT NULL,
  expires_at_ms BIGINT NOT NULL,
  PRIMARY KEY (uid, key_fp, source_net)
);
CREATE INDEX IF NOT EXISTS mfa_remembered_expiry ON mfa_remembered(expires_at_ms);
`,
  },
  {
    version: 5,
    name: "mfa_remembered.totp_binding: a remembered factor is bound to the TOTP secret it stood in for (entries from before bind to nothing and are never honoured)",
    sql: "ALTER TABLE mfa_remembered ADD COLUMN totp_binding TEXT NOT NULL DEFAULT '';",
  },
];

/** The newest schema version this binary knows (the same for both engines). */
export const STATE_SCHEMA_VERSION = Math.max(...SQLITE_MIGRATIONS.map((m) => m.version));

/**
 * Refuses a database whose schema is newer than this binary's.
 * @throws StateError naming both versions and the database.
 */
export function assertKnownVersion(found: number, where: string): void {
  if (found > STATE_SCHEMA_VERSION)
    throw new StateError(
      `${where}: the state schema is version ${found}, but this varco knows versions up to ${STATE_SCHEMA_VERSION}; ` +
        "upgrade varco on this node (a newer gateway migrated the shared state), never downgrade the database",
    );
}

/** The migrations above `current`, in order. */
export function pending(list: readonly Migration[], current: number): Migration[] {
  return list.filter((m) => m.version > current).sort((a, b) => a.version - b.version);
}
