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
