/**
 * The SQLite engine of {@link AuthState}: `<state_dir>/state.db` (WAL, busy_timeout 5 s), the
 * embedded default. better-sqlite3 is synchronous; every compare-and-set is one statement, so
 * two handles on the same file (two processes) never both win.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { assertKnownVersion, pending, SQLITE_MIGRATIONS } from "./migrations.ts";
import { type AuthState, type AuthStateDump, type LockWindow, type RememberedRow, withStateErrors } from "./types.ts";

/** Version of a SQLite state database (0 when it has no `schema_version`, e.g. one made before versioning). */
function versionOf(db: Database.Database): number {
  const t = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").get();
  if (!t) return 0;
  return (db.prepare("SELECT MAX(version) AS v FROM schema_version").get() as { v: number | null }).v ?? 0;
}

/**
 * Brings a SQLite state database to the newest schema in one `BEGIN IMMEDIATE` transaction;
 * returns the versions applied.
 * @throws StateError when the database is newer than this binary.
 */
export function migrateSqlite(db: Database.Database, where: string): number[] {
  return db
    .transaction(() => {
      const current = versionOf(db);
      assertKnownVersion(current, where);
      const todo = pending(SQLITE_MIGRATIONS, current);
      db.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)");
      // Version 1 is the idempotent baseline of the releases before versioning: it is re-run on every
      // open, so a state.db that an older release left without one of its tables is completed.
      if (current >= 1) db.exec((SQLITE_MIGRATIONS[0] as { sql: string }).sql);
      for (const m of todo) {
        db.exec(m.sql);
        db.prepare("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)").run(m.version, new Date().toISOString());
      }
      return todo.map((m) => m.version);
    })
    .immediate();
}

/**
 * Opens (creating the folder 0750 and the file) and migrates `<stateDir>/state.db`.
 * @throws StateError when its schema is newer than this binary; SqliteError when the file is unusable.
 */
export function openSqliteState(stateDir: string): AuthState {
  mkdirSync(stateDir, { recursive: true, mode: 0o750 });
  const file = join(stateDir, "state.db");
  const db = new Database(file);
  try {
    db.pragma("journal_mode = WAL");
    db.pragma("busy_timeout = 5000");
    migrateSqlite(db, file);
  } catch (err) {
    db.close();
    throw err;
  }
  return withStateErrors(sqliteState(db, file));
}

function sqliteState(db: Database.Database, file: string): AuthState {
  const q = {
    secret: db.prepare<[string], { nonce: Buffer; ciphertext: Buffer; tag: Buffer; last_step: number | null }>(
      "SELECT nonce, ciphertext, tag, last_step FROM totp WHERE uid = ?",
    ),
    putSecret: db.prepare(
      "INSERT INTO totp (uid, nonce, ciphertext, tag, last_step, created_at) VALUES (?, ?, ?, ?, NULL, ?) " +
        "ON CONFLICT(uid) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, tag = excluded.tag, last_step = NULL, created_at = excluded.created_at",
    ),
    dropInvitation: db.prepare("DELETE FROM totp_invitations WHERE uid = ?"),
    dropCodes: db.prepare("DELETE FROM recovery_codes WHERE uid = ?"),
    dropSecret: db.prepare("DELETE FROM totp WHERE uid = ?"),
    consumeStep: db.prepare("UPDATE totp SET last_step = ? WHERE uid = ? AND (last_step IS NULL OR last_step < ?)"),
    externalStep: db.prepare<[string], { last_step: number }>("SELECT last_step FROM totp_steps WHERE uid = ?"),
    consumeExternal: db.prepare(
      "INSERT INTO totp_steps (uid, last_step) VALUES (?, ?) ON CONFLICT(uid) DO UPDATE SET last_step = excluded.last_step WHERE totp_steps.last_step < excluded.last_step",
    ),
    putInvitation: db.prepare(
      "INSERT INTO totp_invitations (uid, code_mac, expires_at, created_at) VALUES (?, ?, ?, ?) " +
        "ON CONFLICT(uid) DO UPDATE SET code_mac = excluded.code_mac, expires_at = excluded.expires_at, created_at = excluded.created_at",
    ),
    hasInvitation: db.prepare("SELECT 1 FROM totp_invitations WHERE uid = ? AND expires_at > ?"),
    invitationMatches: db.prepare(
      "SELECT 1 FROM totp_invitations WHERE uid = ? AND code_mac = ? AND expires_at > ? AND NOT EXISTS (SELECT 1 FROM totp WHERE totp.uid = ?)",
    ),
    // Compare-and-delete in one statement: the row goes with the first caller that matches it.
    takeInvitation: db.prepare(
      "DELETE FROM totp_invitations WHERE uid = ? AND code_mac = ? AND expires_at > ? AND NOT EXISTS (SELECT 1 FROM totp WHERE totp.uid = ?)",
    ),
    insertCode: db.prepare("INSERT OR IGNORE INTO recovery_codes (uid, code_hash) VALUES (?, ?)"),
    codeUnused: db.prepare("SELECT 1 FROM recovery_codes WHERE uid = ? AND code_hash = ? AND used_at IS NULL"),
    useCode: db.prepare("UPDATE recovery_codes SET used_at = ? WHERE uid = ? AND code_hash = ? AND used_at IS NULL"),
    codesLeft: db.prepare<[string, number, string], { n: number }>(
      "SELECT COUNT(*) AS n FROM recovery_codes WHERE uid = ? AND used_at IS NULL AND substr(code_hash, 1, ?) = ?",
    ),
    lockState: db.prepare<
      { uid: string; since: number; lead: number; within: number; now: number; lockFor: number; source: string; sourceSince: number },
      { uid_locked: number; source_n: number }
    >(
      `SELECT EXISTS (
         SELECT 1 FROM (
           SELECT at, LEAD(at, @lead) OVER (ORDER BY at DESC) AS oldest
           FROM (SELECT at FROM auth_failures WHERE uid = @uid AND at > @since ORDER BY at DESC LIMIT 1000)
         ) WHERE oldest IS NOT NULL AND at - oldest <= @within AND @now - at < @lockFor
       ) AS uid_locked,
       (SELECT COUNT(*) FROM auth_failures WHERE source = @source AND at > @sourceSince) AS source_n`,
    ),
    addFailure: db.prepare("INSERT INTO auth_failures (uid, source, at) VALUES (?, ?, ?)"),
    expire: db.prepare("DELETE FROM auth_failures WHERE at < ?"),
    forget: db.prepare("DELETE FROM auth_failures WHERE uid = ?"),
    claimMeta: db.prepare("INSERT INTO state_meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO NOTHING"),
    meta: db.prepare<[string], { value: string }>("SELECT value FROM state_meta WHERE name = ?"),
    remember: db.prepare(
      "INSERT INTO mfa_remembered (uid, key_fp, source_net, created_at_ms, expires_at_ms, totp_binding) VALUES (?, ?, ?, ?, ?, ?) " +
        "ON CONFLICT(uid, key_fp, source_net) DO UPDATE SET created_at_ms = excluded.created_at_ms, expires_at_ms = excluded.expires_at_ms, totp_binding = excluded.totp_binding",
    ),
    rememberedExpire: db.prepare("DELETE FROM mfa_remembered WHERE expires_at_ms <= ?"),
    remembered: db.prepare<[string, string, string, number], RememberedSqlRow>(
      "SELECT uid, key_fp, source_net, created_at_ms, expires_at_ms, totp_binding FROM mfa_remembered WHERE uid = ? AND key_fp = ? AND source_net = ? AND expires_at_ms > ?",
    ),
    dropRemembered: db.prepare("DELETE FROM mfa_remembered WHERE uid = ?"),
  };
  const one = (stmt: Database.Statement, ...args: unknown[]) => stmt.get(...args) !== undefined;
  return {
    engine: "sqlite",
    where: file,
    async secret(uid) {
      const r = q.secret.get(uid);
      return r ? { nonce: r.nonce, ciphertext: r.ciphertext, tag: r.tag, lastStep: r.last_step } : undefined;
    },
    hasSecret: async (uid) => q.secret.get(uid) !== undefined,
    async putSecret(uid, s, createdAt) {
      db.transaction(() => {
        q.putSecret.run(uid, s.nonce, s.ciphertext, s.tag, createdAt);
        q.dropInvitation.run(uid);
        q.dropRemembered.run(uid);
      })();
    },
    resetUser: async (uid) =>
      db.transaction(() => {
        q.dropCodes.run(uid);
        q.dropInvitation.run(uid);
        q.dropRemembered.run(uid);
        return q.dropSecret.run(uid).changes > 0;
      })(),
    consumeSecretStep: async (uid, step) => q.consumeStep.run(step, uid, step).changes === 1,
    externalStep: async (uid) => q.externalStep.get(uid)?.last_step,
    consumeExternalStep: async (uid, step) => q.consumeExternal.run(uid, step).changes === 1,
    async putInvitation(uid, mac, expiresAt, createdAt) {
      q.putInvitation.run(uid, mac, expiresAt, createdAt);
    },
    hasInvitation: async (uid, now) => one(q.hasInvitation, uid, now),
    invitationMatches: async (uid, mac, now) => one(q.invitationMatches, uid, mac, now, uid),
    takeInvitation: async (uid, mac, now) => q.takeInvitation.run(uid, mac, now, uid).changes === 1,
    async replaceRecoveryCodes(uid, macs) {
      db.transaction(() => {
        q.dropCodes.run(uid);
        for (const m of macs) q.insertCode.run(uid, m);
      })();
    },
    recoveryCodeUnused: async (uid, mac) => one(q.codeUnused, uid, mac),
    useRecoveryCode: async (uid, mac, usedAt) => q.useCode.run(usedAt, uid, mac).changes === 1,
    recoveryCodesLeft: async (uid, prefix) => q.codesLeft.get(uid, prefix.length, prefix)?.n ?? 0,
    async lockState(uid, source, now, w: LockWindow) {
      const r = q.lockState.get({
        uid,
        since: now - w.lockForMs - w.withinMs,
        lead: w.maxFailures - 1,
        within: w.withinMs,
        now,
        lockFor: w.lockForMs,
        source,
        sourceSince: now - w.withinMs,
      });
      return { uid: r?.uid_locked === 1, source: (r?.source_n ?? 0) >= w.maxFailuresPerSource };
    },
    async addFailure(uid, source, at, expireBefore) {
      q.addFailure.run(uid, source, at);
      q.expire.run(expireBefore);
    },
    forgetFailures: async (uid) => q.forget.run(uid).changes,
    async remember(r) {
      db.transaction(() => {
        q.rememberedExpire.run(r.createdAtMs);
        q.remember.run(r.uid, r.keyFp, r.sourceNet, r.createdAtMs, r.expiresAtMs, r.totpBinding);
      })();
    },
    async remembered(uid, keyFp, sourceNet, nowMs) {
      const r = q.remembered.get(uid, keyFp, sourceNet, nowMs);
      return r ? rememberedRow(r) : undefined;
    },
    forgetRemembered: async (uid) => q.dropRemembered.run(uid).changes,
    async claimMeta(name, value) {
      q.claimMeta.run(name, value);
      return (q.meta.get(name) as { value: string }).value;
    },
    async dump(): Promise<AuthStateDump> {
      return db.transaction(() => ({
        totp: (
          db.prepare("SELECT uid, nonce, ciphertext, tag, last_step, created_at FROM totp ORDER BY uid").all() as {
            uid: string;
            nonce: Buffer;
            ciphertext: Buffer;
            tag: Buffer;
            last_step: number | null;
            created_at: string;
          }[]
        ).map((r) => ({
          uid: r.uid,
          nonce: r.nonce,
          ciphertext: r.ciphertext,
          tag: r.tag,
          lastStep: r.last_step,
          createdAt: r.created_at,
        })),
        totpSteps: (db.prepare("SELECT uid, last_step FROM totp_steps ORDER BY uid").all() as { uid: string; last_step: number }[]).map(
          (r) => ({ uid: r.uid, lastStep: r.last_step }),
        ),
        recoveryCodes: (
          db.prepare("SELECT uid, code_hash, used_at FROM recovery_codes ORDER BY uid, code_hash").all() as {
            uid: string;
            code_hash: string;
            used_at: string | null;
          }[]
        ).map((r) => ({ uid: r.uid, codeHash: r.code_hash, usedAt: r.used_at })),
        invitations: (
          db.prepare("SELECT uid, code_mac, expires_at, created_at FROM totp_invitations ORDER BY uid").all() as {
            uid: string;
            code_mac: string;
            expires_at: number;
            created_at: number;
          }[]
        ).map((r) => ({ uid: r.uid, codeMac: r.code_mac, expiresAt: r.expires_at, createdAt: r.created_at })),
        failures: db.prepare("SELECT uid, source, at FROM auth_failures ORDER BY at").all() as {
          uid: string;
          source: string;
          at: number;
        }[],
        remembered: (
          db
            .prepare(
              "SELECT uid, key_fp, source_net, created_at_ms, expires_at_ms, totp_binding FROM mfa_remembered ORDER BY uid, key_fp, source_net",
            )
            .all() as RememberedSqlRow[]
        ).map(rememberedRow),
        meta: db.prepare("SELECT name, value FROM state_meta ORDER BY name").all() as { name: string; value: string }[],
      }))();
    },
    async load(d, replace) {
      db.transaction(() => {
        if (replace) for (const t of [...TABLES, "state_meta"]) db.exec(`DELETE FROM ${t}`);
        const t = db.prepare("INSERT INTO totp (uid, nonce, ciphertext, tag, last_step, created_at) VALUES (?, ?, ?, ?, ?, ?)");
        for (const r of d.totp) t.run(r.uid, r.nonce, r.ciphertext, r.tag, r.lastStep, r.createdAt);
        const s = db.prepare("INSERT INTO totp_steps (uid, last_step) VALUES (?, ?)");
        for (const r of d.totpSteps) s.run(r.uid, r.lastStep);
        const c = db.prepare("INSERT INTO recovery_codes (uid, code_hash, used_at) VALUES (?, ?, ?)");
        for (const r of d.recoveryCodes) c.run(r.uid, r.codeHash, r.usedAt);
        const i = db.prepare("INSERT INTO totp_invitations (uid, code_mac, expires_at, created_at) VALUES (?, ?, ?, ?)");
        for (const r of d.invitations) i.run(r.uid, r.codeMac, r.expiresAt, r.createdAt);
        for (const r of d.failures) q.addFailure.run(r.uid, r.source, r.at);
        for (const r of d.remembered ?? []) q.remember.run(r.uid, r.keyFp, r.sourceNet, r.createdAtMs, r.expiresAtMs, r.totpBinding ?? "");
        for (const r of d.meta) q.claimMeta.run(r.name, r.value);
      })();
    },
    rowCount: async () => TABLES.reduce((n, t) => n + (db.prepare(`SELECT COUNT(*) AS n FROM ${t}`).get() as { n: number }).n, 0),
    schemaVersion: async () => versionOf(db),
    async ping() {
      db.prepare("SELECT 1").get();
    },
    async close() {
      if (db.open) db.close();
    },
  };
}

/** A `mfa_remembered` row as SQL returns it. */
interface RememberedSqlRow {
  uid: string;
  key_fp: string;
  source_net: string;
  created_at_ms: number | string;
  expires_at_ms: number | string;
  totp_binding: string;
}

/** A `mfa_remembered` row of either engine (PostgreSQL returns BIGINT as a string). */
export function rememberedRow(r: RememberedSqlRow): RememberedRow {
  return {
    uid: r.uid,
    keyFp: r.key_fp,
    sourceNet: r.source_net,
    createdAtMs: Number(r.created_at_ms),
    expiresAtMs: Number(r.expires_at_ms),
    totpBinding: r.totp_binding,
  };
}

/** The login-state tables (for copy and row counts). */
export const TABLES = ["totp", "totp_steps", "recovery_codes", "totp_invitations", "auth_failures", "mfa_remembered"] as const;
