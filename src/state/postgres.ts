/**
 * The PostgreSQL engine of {@link AuthState} (driver `pg`), for N gateways sharing one login
 * state. Connection settings come from a libpq URL (`postgres://user:pass@host:5432/db?sslmode=verify-full`,
 * https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING); with
 * `sslmode=verify-full` the server certificate is checked against the system CAs (or `sslrootcert=FILE`)
 * and the host name. Every compare-and-set is one UPDATE/DELETE/INSERT … ON CONFLICT statement:
 * under READ COMMITTED a second writer waits for the first and re-checks the WHERE clause on the
 * new row (PostgreSQL docs 13.2.1), so of two gateways only one wins.
 */
import pg from "pg";
import { assertKnownVersion, POSTGRES_MIGRATIONS, pending } from "./migrations.ts";
import { rememberedRow, TABLES } from "./sqlite.ts";
import { type AuthState, type AuthStateDump, StateError, withStateErrors } from "./types.ts";

/** Advisory lock key that serialises migrations of gateways starting at once ("varco" in ASCII). */
const MIGRATION_LOCK = 0x766172636f;

/**
 * The URL without its secrets, for messages and logs: the password of the user part and every
 * query parameter libpq reads a secret from (`password`, `sslpassword`; libpq-connect §34.1.2).
 */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    for (const k of [...u.searchParams.keys()]) if (/pass/i.test(k)) u.searchParams.set(k, "***");
    return u.toString();
  } catch {
    return "(unparsable PostgreSQL URL)";
  }
}

export interface PostgresOptions {
  /** Time to wait for a connection, ms (default 5000). */
  readonly connectTimeoutMs?: number;
  /** Time a statement may take, ms (default 10 000). */
  readonly statementTimeoutMs?: number;
  /** Pool size (default 10). */
  readonly max?: number;
  /** Called with every error of an idle pooled connection (the pool replaces it; default: ignored). */
  readonly onIdleError?: (err: Error) => void;
}

/**
 * Runs `f` with a client checked out of `pool`. pg emits 'error' on a checked-out client whose
 * connection dies (PostgreSQL stopped mid-query); unheard, that event ends the process. It is
 * heard here (the query in flight rejects anyway), and a client that failed is destroyed on
 * release instead of going back to the pool.
 */
export async function withClient<T>(pool: pg.Pool, f: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  let broken: Error | undefined;
  const onError = (err: Error) => {
    broken = err;
  };
  c.on("error", onError);
  try {
    return await f(c);
  } finally {
    c.off("error", onError);
    c.release(broken);
  }
}

/** `f` in one transaction (BEGIN … COMMIT; ROLLBACK and rethrow on any error). */
export async function tx<T>(pool: pg.Pool, f: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  return withClient(pool, async (c) => {
    try {
      await c.query("BEGIN");
      const r = await f(c);
      await c.query("COMMIT");
      return r;
    } catch (err) {
      await c.query("ROLLBACK").catch(() => undefined);
      throw err;
    }
  });
}

async function versionOf(c: pg.ClientBase): Promise<number> {
  const t = await c.query("SELECT to_regclass('schema_version') IS NOT NULL AS ok");
  if (!t.rows[0]?.ok) return 0;
  const r = await c.query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version");
  return Number(r.rows[0]?.v ?? 0);
}

/**
 * Brings the PostgreSQL schema to the newest version, in one transaction holding an advisory
 * lock (two gateways starting at once migrate one after the other); returns the versions applied.
 * @throws StateError when the database is newer than this binary; pg errors when unreachable.
 */
export async function migratePostgres(pool: pg.Pool, where: string): Promise<number[]> {
  return tx(pool, async (c) => {
    await c.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK]);
    const current = await versionOf(c);
    assertKnownVersion(current, where);
    const todo = pending(POSTGRES_MIGRATIONS, current);
    await c.query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)");
    for (const m of todo) {
      await c.query(m.sql);
      await c.query("INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)", [m.version, new Date().toISOString()]);
    }
    return todo.map((m) => m.version);
  });
}

/**
 * Connects to PostgreSQL at `url` and migrates the schema (with `migrate: false`, only checks the
 * version is not newer than this binary's).
 * @throws StateError with the redacted URL and the cause when the server cannot be reached or the schema is newer.
 */
export async function openPostgresState(url: string, o: PostgresOptions & { migrate?: boolean } = {}): Promise<AuthState> {
  const where = redactUrl(url);
  const pool = new pg.Pool({
    connectionString: url,
    connectionTimeoutMillis: o.connectTimeoutMs ?? 5000,
    statement_timeout: o.statementTimeoutMs ?? 10_000,
    max: o.max ?? 10,
  });
  // An idle connection dropped by the server must not crash the process (pg emits 'error' on the pool).
  pool.on("error", (err) => o.onIdleError?.(err));
  try {
    if (o.migrate === false) {
      await withClient(pool, async (c) => assertKnownVersion(await versionOf(c), where));
    } else await migratePostgres(pool, where);
  } catch (err) {
    await pool.end().catch(() => undefined);
    if (err instanceof StateError) throw err;
    throw new StateError(`${where}: cannot use the PostgreSQL state (${(err as Error).message})`);
  }
  return withStateErrors(postgresState(pool, where));
}

function postgresState(pool: pg.Pool, where: string): AuthState {
  const query = async (sql: string, args: unknown[] = []) => pool.query(sql, args);
  const exists = async (sql: string, args: unknown[]) => ((await query(sql, args)).rowCount ?? 0) > 0;
  const changed = async (sql: string, args: unknown[]) => ((await query(sql, args)).rowCount ?? 0) === 1;
  return {
    engine: "postgres",
    where,
    async secret(uid) {
      const r = (await query("SELECT nonce, ciphertext, tag, last_step FROM totp WHERE uid = $1", [uid])).rows[0];
      return r
        ? { nonce: r.nonce, ciphertext: r.ciphertext, tag: r.tag, lastStep: r.last_step === null ? null : Number(r.last_step) }
        : undefined;
    },
    hasSecret: (uid) => exists("SELECT 1 FROM totp WHERE uid = $1", [uid]),
    putSecret: (uid, s, createdAt) =>
      tx(pool, async (c) => {
        await c.query(
          "INSERT INTO totp (uid, nonce, ciphertext, tag, last_step, created_at) VALUES ($1, $2, $3, $4, NULL, $5) " +
            "ON CONFLICT (uid) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, tag = excluded.tag, last_step = NULL, created_at = excluded.created_at",
          [uid, s.nonce, s.ciphertext, s.tag, createdAt],
        );
        await c.query("DELETE FROM totp_invitations WHERE uid = $1", [uid]);
        await c.query("DELETE FROM mfa_remembered WHERE uid = $1", [uid]);
      }),
    resetUser: (uid) =>
      tx(pool, async (c) => {
        await c.query("DELETE FROM recovery_codes WHERE uid = $1", [uid]);
        await c.query("DELETE FROM totp_invitations WHERE uid = $1", [uid]);
        await c.query("DELETE FROM mfa_remembered WHERE uid = $1", [uid]);
        return ((await c.query("DELETE FROM totp WHERE uid = $1", [uid])).rowCount ?? 0) > 0;
      }),
    consumeSecretStep: (uid, step) =>
      changed("UPDATE totp SET last_step = $1 WHERE uid = $2 AND (last_step IS NULL OR last_step < $1)", [step, uid]),
    async externalStep(uid) {
      const r = (await query("SELECT last_step FROM totp_steps WHERE uid = $1", [uid])).rows[0];
      return r ? Number(r.last_step) : undefined;
    },
    consumeExternalStep: (uid, step) =>
      changed(
        "INSERT INTO totp_steps (uid, last_step) VALUES ($1, $2) ON CONFLICT (uid) DO UPDATE SET last_step = excluded.last_step WHERE totp_steps.last_step < excluded.last_step",
        [uid, step],
      ),
    async putInvitation(uid, mac, expiresAt, createdAt) {
      await query(
        "INSERT INTO totp_invitations (uid, code_mac, expires_at, created_at) VALUES ($1, $2, $3, $4) " +
          "ON CONFLICT (uid) DO UPDATE SET code_mac = excluded.code_mac, expires_at = excluded.expires_at, created_at = excluded.created_at",
        [uid, mac, expiresAt, createdAt],
      );
    },
    hasInvitation: (uid, now) => exists("SELECT 1 FROM totp_invitations WHERE uid = $1 AND expires_at > $2", [uid, now]),
    invitationMatches: (uid, mac, now) =>
      exists(
        "SELECT 1 FROM totp_invitations WHERE uid = $1 AND code_mac = $2 AND expires_at > $3 AND NOT EXISTS (SELECT 1 FROM totp WHERE totp.uid = $1)",
        [uid, mac, now],
      ),
    takeInvitation: (uid, mac, now) =>
      changed(
        "DELETE FROM totp_invitations WHERE uid = $1 AND code_mac = $2 AND expires_at > $3 AND NOT EXISTS (SELECT 1 FROM totp WHERE totp.uid = $1)",
        [uid, mac, now],
      ),
    replaceRecoveryCodes: (uid, macs) =>
      tx(pool, async (c) => {
        await c.query("DELETE FROM recovery_codes WHERE uid = $1", [uid]);
        for (const m of macs) await c.query("INSERT INTO recovery_codes (uid, code_hash) VALUES ($1, $2) ON CONFLICT DO NOTHING", [uid, m]);
      }),
    recoveryCodeUnused: (uid, mac) =>
      exists("SELECT 1 FROM recovery_codes WHERE uid = $1 AND code_hash = $2 AND used_at IS NULL", [uid, mac]),
    useRecoveryCode: (uid, mac, usedAt) =>
      changed("UPDATE recovery_codes SET used_at = $1 WHERE uid = $2 AND code_hash = $3 AND used_at IS NULL", [usedAt, uid, mac]),
    async recoveryCodesLeft(uid, prefix) {
      const r = await query(
        "SELECT COUNT(*) AS n FROM recovery_codes WHERE uid = $1 AND used_at IS NULL AND substr(code_hash, 1, $2) = $3",
        [uid, prefix.length, prefix],
      );
      return Number(r.rows[0]?.n ?? 0);
    },
    async lockState(uid, source, now, w) {
      const r = await query(
        `SELECT EXISTS (
           SELECT 1 FROM (
             SELECT at, LEAD(at, $3::int) OVER (ORDER BY at DESC) AS oldest
             FROM (SELECT at FROM auth_failures WHERE uid = $1 AND at > $2 ORDER BY at DESC LIMIT 1000) r
           ) w WHERE oldest IS NOT NULL AND at - oldest <= $4 AND $5 - at < $6
         ) AS uid_locked,
         (SELECT COUNT(*) FROM auth_failures WHERE source = $7 AND at > $8) AS source_n`,
        [uid, now - w.lockForMs - w.withinMs, w.maxFailures - 1, w.withinMs, now, w.lockForMs, source, now - w.withinMs],
      );
      const row = r.rows[0];
      return { uid: row?.uid_locked === true, source: Number(row?.source_n ?? 0) >= w.maxFailuresPerSource };
    },
    async addFailure(uid, source, at, expireBefore) {
      await query("INSERT INTO auth_failures (uid, source, at) VALUES ($1, $2, $3)", [uid, source, at]);
      await query("DELETE FROM auth_failures WHERE at < $1", [expireBefore]);
    },
    async forgetFailures(uid) {
      return (await query("DELETE FROM auth_failures WHERE uid = $1", [uid])).rowCount ?? 0;
    },
    remember: (r) =>
      tx(pool, async (c) => {
        await c.query("DELETE FROM mfa_remembered WHERE expires_at_ms <= $1", [r.createdAtMs]);
        await c.query(
          "INSERT INTO mfa_remembered (uid, key_fp, source_net, created_at_ms, expires_at_ms, totp_binding) VALUES ($1, $2, $3, $4, $5, $6) " +
            "ON CONFLICT (uid, key_fp, source_net) DO UPDATE SET created_at_ms = excluded.created_at_ms, expires_at_ms = excluded.expires_at_ms, totp_binding = excluded.totp_binding",
          [r.uid, r.keyFp, r.sourceNet, r.createdAtMs, r.expiresAtMs, r.totpBinding],
        );
      }),
    async remembered(uid, keyFp, sourceNet, nowMs) {
      const r = (
        await query(
          "SELECT uid, key_fp, source_net, created_at_ms, expires_at_ms, totp_binding FROM mfa_remembered WHERE uid = $1 AND key_fp = $2 AND source_net = $3 AND expires_at_ms > $4",
          [uid, keyFp, sourceNet, nowMs],
        )
      ).rows[0];
      return r ? rememberedRow(r) : undefined;
    },
    async forgetRemembered(uid) {
      return (await query("DELETE FROM mfa_remembered WHERE uid = $1", [uid])).rowCount ?? 0;
    },
    async claimMeta(name, value) {
      await query("INSERT INTO state_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", [name, value]);
      return String((await query("SELECT value FROM state_meta WHERE name = $1", [name])).rows[0]?.value);
    },
    async dump(): Promise<AuthStateDump> {
      return tx(pool, async (c) => {
        await c.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
        const rows = async (sql: string) => (await c.query(sql)).rows;
        return {
          totp: (await rows("SELECT uid, nonce, ciphertext, tag, last_step, created_at FROM totp ORDER BY uid")).map((r) => ({
            uid: r.uid,
            nonce: r.nonce,
            ciphertext: r.ciphertext,
            tag: r.tag,
            lastStep: r.last_step === null ? null : Number(r.last_step),
            createdAt: r.created_at,
          })),
          totpSteps: (await rows("SELECT uid, last_step FROM totp_steps ORDER BY uid")).map((r) => ({
            uid: r.uid,
            lastStep: Number(r.last_step),
          })),
          recoveryCodes: (await rows("SELECT uid, code_hash, used_at FROM recovery_codes ORDER BY uid, code_hash")).map((r) => ({
            uid: r.uid,
            codeHash: r.code_hash,
            usedAt: r.used_at,
          })),
          invitations: (await rows("SELECT uid, code_mac, expires_at, created_at FROM totp_invitations ORDER BY uid")).map((r) => ({
            uid: r.uid,
            codeMac: r.code_mac,
            expiresAt: Number(r.expires_at),
            createdAt: Number(r.created_at),
          })),
          failures: (await rows("SELECT uid, source, at FROM auth_failures ORDER BY at, id")).map((r) => ({
            uid: r.uid,
            source: r.source,
            at: Number(r.at),
          })),
          remembered: (
            await rows(
              "SELECT uid, key_fp, source_net, created_at_ms, expires_at_ms, totp_binding FROM mfa_remembered ORDER BY uid, key_fp, source_net",
            )
          ).map((r) => rememberedRow(r)),
          meta: (await rows("SELECT name, value FROM state_meta ORDER BY name")).map((r) => ({ name: r.name, value: r.value })),
        };
      });
    },
    load: (d, replace) =>
      tx(pool, async (c) => {
        if (replace) for (const t of [...TABLES, "state_meta"]) await c.query(`DELETE FROM ${t}`);
        for (const r of d.totp)
          await c.query("INSERT INTO totp (uid, nonce, ciphertext, tag, last_step, created_at) VALUES ($1, $2, $3, $4, $5, $6)", [
            r.uid,
            r.nonce,
            r.ciphertext,
            r.tag,
            r.lastStep,
            r.createdAt,
          ]);
        for (const r of d.totpSteps) await c.query("INSERT INTO totp_steps (uid, last_step) VALUES ($1, $2)", [r.uid, r.lastStep]);
        for (const r of d.recoveryCodes)
          await c.query("INSERT INTO recovery_codes (uid, code_hash, used_at) VALUES ($1, $2, $3)", [r.uid, r.codeHash, r.usedAt]);
        for (const r of d.invitations)
          await c.query("INSERT INTO totp_invitations (uid, code_mac, expires_at, created_at) VALUES ($1, $2, $3, $4)", [
            r.uid,
            r.codeMac,
            r.expiresAt,
            r.createdAt,
          ]);
        for (const r of d.failures)
          await c.query("INSERT INTO auth_failures (uid, source, at) VALUES ($1, $2, $3)", [r.uid, r.source, r.at]);
        for (const r of d.remembered ?? [])
          await c.query(
            "INSERT INTO mfa_remembered (uid, key_fp, source_net, created_at_ms, expires_at_ms, totp_binding) VALUES ($1, $2, $3, $4, $5, $6)",
            [r.uid, r.keyFp, r.sourceNet, r.createdAtMs, r.expiresAtMs, r.totpBinding ?? ""],
          );
      }),
    async rowCount() {
      let n = 0;
      for (const t of TABLES) n += Number((await query(`SELECT COUNT(*) AS n FROM ${t}`)).rows[0]?.n ?? 0);
      return n;
    },
    schemaVersion: () => withClient(pool, versionOf),
    async ping() {
      await query("SELECT 1");
    },
    close: () => pool.end(),
  };
}
