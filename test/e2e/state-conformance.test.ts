/**
 * One conformance suite for both engines of the login state (SQLite `state.db`, PostgreSQL): the
 * same cases with the engine as a parameter. Races go through two separate handles (two
 * connections / two database handles), as two gateways would.
 */
import { createCipheriv, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  currentCode,
  directorySecretBinding,
  LOCAL_TOTP_BINDING,
  lockoutOn,
  newOneTimeCode,
  newRecoveryCodes,
  newSecret,
  openTotpStore,
  rememberedValid,
  totpStoreOn,
} from "../../src/auth/index.ts";
import {
  type AuthState,
  openPostgresState,
  openSqliteState,
  openState,
  POSTGRES_MIGRATIONS,
  SQLITE_MIGRATIONS,
  STATE_SCHEMA_VERSION,
  StateError,
} from "../../src/state/index.ts";
import { havePostgres, startPostgres, type TestPostgres } from "../helpers/postgres.ts";

const SETTINGS = { issuer: "varco", digits: 6 as const, periodMs: 30_000, window: 1 };
const LOCK = { maxFailures: 3, withinMs: 60_000, lockForMs: 120_000, maxFailuresPerSource: 5 };
const T0 = Date.UTC(2026, 10, 28, 9, 0, 0);
const KEY = randomBytes(32);

interface Engine {
  readonly name: string;
  /** A new handle on the same (empty at first) state. */
  open(): Promise<AuthState>;
  /** Records a schema version (to test the refusal of a newer schema); -1 forgets every version above this binary's. */
  setVersion(v: number): Promise<void>;
  /** Deletes every row (between cases). */
  clear(): Promise<void>;
}

const dirs: string[] = [];
let pg: TestPostgres | undefined;

function sqliteEngine(): Engine {
  const dir = mkdtempSync(join(tmpdir(), "varco-state-"));
  dirs.push(dir);
  const raw = (sql: string) => {
    const db = new Database(join(dir, "state.db"));
    try {
      db.exec(sql);
    } finally {
      db.close();
    }
  };
  return {
    name: "sqlite",
    open: async () => openSqliteState(dir),
    setVersion: async (v) =>
      raw(
        v < 0
          ? `DELETE FROM schema_version WHERE version > ${STATE_SCHEMA_VERSION}`
          : `INSERT INTO schema_version (version, applied_at) VALUES (${v}, 'test')`,
      ),
    clear: async () =>
      raw(
        "DELETE FROM totp; DELETE FROM totp_steps; DELETE FROM recovery_codes; DELETE FROM totp_invitations; DELETE FROM auth_failures; DELETE FROM mfa_remembered;",
      ),
  };
}

function postgresEngine(): Engine {
  return {
    name: "postgres",
    open: () => openPostgresState((pg as TestPostgres).url),
    setVersion: async (v) =>
      void (await (pg as TestPostgres).psql(
        v < 0
          ? `DELETE FROM schema_version WHERE version > ${STATE_SCHEMA_VERSION}`
          : `INSERT INTO schema_version (version, applied_at) VALUES (${v}, 'test')`,
      )),
    clear: async () =>
      void (await (pg as TestPostgres).psql(
        "DELETE FROM totp; DELETE FROM totp_steps; DELETE FROM recovery_codes; DELETE FROM totp_invitations; DELETE FROM auth_failures; DELETE FROM mfa_remembered;",
      )),
  };
}

beforeAll(async () => {
  if (havePostgres) pg = await startPostgres();
}, 90_000);

afterAll(async () => {
  await pg?.destroy();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}, 60_000);

const engines: { name: string; make: () => Engine; skip: boolean }[] = [
  { name: "sqlite", make: sqliteEngine, skip: false },
  { name: "postgres", make: postgresEngine, skip: !havePostgres },
];

for (const e of engines) {
  describe.skipIf(e.skip)(`login state conformance: ${e.name}`, () => {
    let engine: Engine;
    let a: AuthState;
    let b: AuthState;
    beforeAll(async () => {
      engine = e.make();
      a = await engine.open();
      b = await engine.open();
    }, 30_000);
    afterAll(async () => {
      await a?.close();
      await b?.close();
    });
    const stores = () => [totpStoreOn(a, KEY, SETTINGS), totpStoreOn(b, KEY, SETTINGS)] as const;

    it("a TOTP step is used once: of 8 racing consumers through two handles exactly one wins, every time", async () => {
      await engine.clear();
      const [sa, sb] = stores();
      for (let round = 0; round < 10; round++) {
        const uid = `racer${round}`;
        const secret = newSecret();
        await sa.setSecret(uid, secret);
        const code = currentCode(SETTINGS, secret, T0);
        const results = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 ? sa : sb).verifyCode(uid, code, T0)));
        expect(results.filter(Boolean), `round ${round}`).toHaveLength(1);
        // The same code through either handle, later in the step: refused.
        expect(await sb.verifyCode(uid, code, T0 + 5000)).toBe(false);
        expect(await sa.verifyCode(uid, code, T0 + 5000)).toBe(false);
        // The next step's code works once.
        const next = currentCode(SETTINGS, secret, T0 + 30_000);
        expect(await sb.verifyCode(uid, next, T0 + 30_000)).toBe(true);
        expect(await sa.verifyCode(uid, next, T0 + 30_000)).toBe(false);
      }
    });

    it("the CAS itself: consumeSecretStep and consumeExternalStep accept a step once and never a lower one", async () => {
      await engine.clear();
      const [sa] = stores();
      await sa.setSecret("cas", newSecret());
      const won = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).consumeSecretStep("cas", 1000)));
      expect(won.filter(Boolean)).toHaveLength(1);
      expect(await a.consumeSecretStep("cas", 999)).toBe(false);
      expect(await b.consumeSecretStep("cas", 1001)).toBe(true);
      const ext = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).consumeExternalStep("ext", 500)));
      expect(ext.filter(Boolean)).toHaveLength(1);
      expect(await a.externalStep("ext")).toBe(500);
      expect(await b.consumeExternalStep("ext", 499)).toBe(false);
      // A directory-held secret's step survives a reset (else a used code could be replayed).
      await sa.reset("ext");
      expect(await b.externalStep("ext")).toBe(500);
    });

    it("directory-held secrets: a code used through one handle is refused through the other", async () => {
      await engine.clear();
      const [sa, sb] = stores();
      const secret = newSecret();
      const code = currentCode(SETTINGS, secret, T0);
      const r = await Promise.all([sa.verifyExternal("dir", secret, code, T0), sb.verifyExternal("dir", secret, code, T0)]);
      expect(r.filter(Boolean)).toHaveLength(1);
      expect(await sb.verifyExternal("dir", secret, code, T0, false)).toBe(false);
    });

    it("a recovery code is used once under a race, per uid, and counted", async () => {
      await engine.clear();
      const [sa, sb] = stores();
      const codes = newRecoveryCodes();
      await sa.setRecoveryCodes("u", codes);
      await sb.setRecoveryCodes("w", newRecoveryCodes());
      expect(await sb.recoveryCodesLeft("u")).toBe(10);
      const c0 = codes[0] as string;
      expect(await sb.useRecoveryCode("w", c0)).toBe(false);
      expect(await sb.useRecoveryCode("u", c0, false)).toBe(true);
      const r = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 ? sa : sb).useRecoveryCode("u", c0)));
      expect(r.filter(Boolean)).toHaveLength(1);
      expect(await sa.useRecoveryCode("u", c0, false)).toBe(false);
      expect(await sa.recoveryCodesLeft("u")).toBe(9);
      // Replaced codes are gone.
      await sb.setRecoveryCodes("u", newRecoveryCodes(2));
      expect(await sa.useRecoveryCode("u", codes[1] as string)).toBe(false);
      expect(await sa.recoveryCodesLeft("u")).toBe(2);
    });

    it("invitations: valid until expiry (exclusive), single use under a race, bound to the uid, dropped by enrolment", async () => {
      await engine.clear();
      const [sa, sb] = stores();
      const code = await sa.invite("inv", 60_000, T0);
      expect(await sb.hasInvitation("inv", T0 + 59_999)).toBe(true);
      expect(await sb.hasInvitation("inv", T0 + 60_000)).toBe(false);
      expect(await sb.invitationValid("inv", code, T0)).toBe(true);
      expect(await sb.invitationValid("other", code, T0)).toBe(false);
      expect(await sb.consumeInvitation("inv", code, T0 + 60_000)).toBe(false);
      expect(await sb.consumeInvitation("inv", newOneTimeCode(), T0)).toBe(false);
      const r = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 ? sa : sb).consumeInvitation("inv", code.toUpperCase(), T0)));
      expect(r.filter(Boolean)).toHaveLength(1);
      // Enrolment drops a pending invitation; an enrolled uid cannot consume a new one.
      const again = await sa.invite("inv2", 60_000, T0);
      await sb.setSecret("inv2", newSecret());
      expect(await sa.hasInvitation("inv2", T0)).toBe(false);
      const late = await sa.invite("inv2", 60_000, T0);
      expect(await sb.consumeInvitation("inv2", late, T0)).toBe(false);
      expect(await sb.consumeInvitation("inv2", again, T0)).toBe(false);
    });

    it("reset forgets secret, recovery codes and invitation in one go", async () => {
      await engine.clear();
      const [sa, sb] = stores();
      await sa.setSecret("r", newSecret());
      await sa.setRecoveryCodes("r", newRecoveryCodes());
      await sa.invite("r", 60_000, T0);
      expect(await sb.reset("r")).toBe(true);
      expect(await sa.hasSecret("r")).toBe(false);
      expect(await sa.recoveryCodesLeft("r")).toBe(0);
      expect(await sa.hasInvitation("r", T0)).toBe(false);
      expect(await sb.reset("r")).toBe(false);
    });

    it("lockout per uid: failures spread over two handles lock on both; sliding window; lock_for; unlock", async () => {
      await engine.clear();
      const la = lockoutOn(a, LOCK);
      const lb = lockoutOn(b, LOCK);
      expect((await la.fail("mario", "192.0.2.1", T0)).lockedUid).toBe(false);
      expect((await lb.fail("mario", "192.0.2.2", T0 + 1000)).lockedUid).toBe(false);
      expect((await la.fail("mario", "198.51.100.3", T0 + 2000)).lockedUid).toBe(true);
      expect((await lb.locked("mario", "203.0.113.9", T0 + 3000)).uid).toBe(true);
      expect((await la.locked("mario", "203.0.113.9", T0 + 3000)).uid).toBe(true);
      // While locked, attempts are not stored (they cannot extend the lock).
      expect((await lb.fail("mario", "192.0.2.1", T0 + 60_000)).wasLocked).toBe(true);
      expect((await la.locked("mario", "x", T0 + 2000 + LOCK.lockForMs - 1)).uid).toBe(true);
      expect((await la.locked("mario", "x", T0 + 2000 + LOCK.lockForMs)).uid).toBe(false);
      expect(await lb.unlock("mario")).toBe(3);
      expect((await la.locked("mario", "x", T0 + 3000)).uid).toBe(false);
      // Three failures spread wider than `within` never lock.
      for (const [i, t] of [0, 40_000, 80_000].entries())
        expect((await (i % 2 ? la : lb).fail("anna", `10.0.0.${i}`, T0 + t)).lockedUid).toBe(false);
      // A completed login clears the uid's failures.
      await la.fail("bob", "10.1.0.1", T0);
      await lb.fail("bob", "10.1.0.2", T0 + 1);
      await lb.succeed("bob");
      expect((await la.fail("bob", "10.1.0.3", T0 + 2)).lockedUid).toBe(false);
    });

    it("lockout per source: a /64 (or an IPv4 address) is counted over both handles within the window", async () => {
      await engine.clear();
      const la = lockoutOn(a, LOCK);
      const lb = lockoutOn(b, LOCK);
      for (let i = 0; i < 4; i++)
        expect((await (i % 2 ? la : lb).fail(`u${i}`, `2001:db8:5:6::${i + 1}`, T0 + i)).lockedSource).toBe(false);
      expect((await la.fail("u9", "2001:db8:5:6:ffff::1", T0 + 10)).lockedSource).toBe(true);
      expect((await lb.locked("new", "2001:db8:5:6::abcd", T0 + 11)).source).toBe(true);
      expect((await lb.locked("new", "2001:db8:5:7::1", T0 + 11)).source).toBe(false);
      expect((await lb.locked("new", "2001:db8:5:6::abcd", T0 + 4 + LOCK.withinMs)).source).toBe(false);
    });

    it("remembered second factors: shared by both handles, exact match, expiry exclusive, upsert, forget per uid", async () => {
      await engine.clear();
      const row = {
        uid: "mario",
        keyFp: "SHA256:aaa",
        sourceNet: "192.0.2.0/24",
        createdAtMs: T0,
        expiresAtMs: T0 + 60_000,
        totpBinding: "ldap:0a",
      };
      await a.remember(row);
      await a.remember({ ...row, uid: "anna" });
      expect(await b.remembered("mario", "SHA256:aaa", "192.0.2.0/24", T0 + 1)).toEqual(row);
      expect(await b.remembered("mario", "SHA256:aaa", "192.0.2.0/24", T0 + 59_999)).toEqual(row);
      expect(await b.remembered("mario", "SHA256:aaa", "192.0.2.0/24", T0 + 60_000)).toBeUndefined();
      for (const [u, k, n] of [
        ["Mario", "SHA256:aaa", "192.0.2.0/24"],
        ["mario", "SHA256:aab", "192.0.2.0/24"],
        ["mario", "SHA256:aaa", "192.0.3.0/24"],
        ["mario%", "SHA256:aaa", "192.0.2.0/24"],
      ] as const)
        expect(await b.remembered(u, k, n, T0 + 1)).toBeUndefined();
      // A later full login moves both times; an insert purges entries already expired (any uid).
      await b.remember({ ...row, keyFp: "SHA256:old", createdAtMs: T0 - 120_000, expiresAtMs: T0 - 60_000 });
      await b.remember({ ...row, createdAtMs: T0 + 10_000, expiresAtMs: T0 + 70_000 });
      expect((await a.remembered("mario", "SHA256:aaa", "192.0.2.0/24", T0 + 65_000))?.createdAtMs).toBe(T0 + 10_000);
      // A full login after the directory's secret changed rebinds the entry to the new secret.
      await a.remember({ ...row, createdAtMs: T0 + 11_000, expiresAtMs: T0 + 71_000, totpBinding: "ldap:0b" });
      expect((await b.remembered("mario", "SHA256:aaa", "192.0.2.0/24", T0 + 65_000))?.totpBinding).toBe("ldap:0b");
      expect((await a.dump()).remembered?.map((r) => r.keyFp)).toEqual(["SHA256:aaa", "SHA256:aaa"]);
      expect(await b.forgetRemembered("mario")).toBe(1);
      expect(await b.forgetRemembered("mario")).toBe(0);
      expect(await a.remembered("anna", "SHA256:aaa", "192.0.2.0/24", T0 + 1)).toBeDefined();
    });

    it("remembered second factors are revoked by a TOTP reset, a re-enrolment and a lockout that trips (not by a source lock)", async () => {
      await engine.clear();
      const [sa, sb] = stores();
      const row = (uid: string) => ({
        uid,
        keyFp: "SHA256:k",
        sourceNet: "2001:db8:1:2::/64",
        createdAtMs: T0,
        expiresAtMs: T0 + 3_600_000,
        totpBinding: "local",
      });
      const has = async (uid: string) => (await b.remembered(uid, "SHA256:k", "2001:db8:1:2::/64", T0 + 1)) !== undefined;
      await sa.setSecret("reset", newSecret());
      await a.remember(row("reset"));
      expect(await sb.reset("reset")).toBe(true);
      expect(await has("reset")).toBe(false);
      await sa.setSecret("again", newSecret());
      await a.remember(row("again"));
      await sb.setSecret("again", newSecret());
      expect(await has("again")).toBe(false);
      await a.remember(row("locked"));
      const la = lockoutOn(a, LOCK);
      const lb = lockoutOn(b, LOCK);
      await la.fail("locked", "192.0.2.1", T0);
      await lb.fail("locked", "192.0.2.2", T0 + 1);
      expect(await has("locked")).toBe(true);
      expect((await la.fail("locked", "192.0.2.3", T0 + 2)).lockedUid).toBe(true);
      expect(await has("locked")).toBe(false);
      // Locking a source (five failures of other uids) leaves the uids' entries alone.
      await a.remember(row("bystander"));
      for (let i = 0; i < 5; i++) await (i % 2 ? la : lb).fail(`u${i}`, "198.51.100.7", T0 + 10 + i);
      expect((await la.locked("x", "198.51.100.7", T0 + 20)).source).toBe(true);
      expect(await has("bystander")).toBe(true);
    });

    it("dump and load carry the remembered second factors; rowCount counts them", async () => {
      await engine.clear();
      const row = {
        uid: "copy",
        keyFp: "SHA256:c",
        sourceNet: "10.0.0.0/24",
        createdAtMs: T0,
        expiresAtMs: T0 + 1000,
        totpBinding: "local",
      };
      await a.remember(row);
      const n = await a.rowCount();
      const d = await a.dump();
      await b.load(d, true);
      expect((await b.dump()).remembered).toEqual([row]);
      expect(await b.rowCount()).toBe(n);
      expect(n).toBeGreaterThanOrEqual(1);
      // A dump made before entries were bound to a TOTP secret loads them bound to nothing (never honoured).
      const { totpBinding: _, ...unbound } = row;
      await b.load({ ...d, remembered: [unbound as typeof row] }, true);
      expect((await b.dump()).remembered).toEqual([{ ...row, totpBinding: "" }]);
      // A dump made before the table existed loads (nothing remembered).
      const { remembered: _r, ...old } = d;
      await b.load(old, true);
      expect((await b.dump()).remembered).toEqual([]);
    });

    it("state_meta: of racing claims the first value stays, and every handle reads it", async () => {
      const name = `check-${e.name}`;
      const got = await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 ? a : b).claimMeta(name, `v${i}`)));
      expect(new Set(got).size).toBe(1);
      expect(await a.claimMeta(name, "other")).toBe(got[0]);
    });

    it("refuses a schema newer than this binary, naming both versions", async () => {
      await engine.setVersion(STATE_SCHEMA_VERSION + 1);
      const err = await engine.open().then(
        async (s) => {
          await s.close();
          return undefined;
        },
        (x: unknown) => x,
      );
      expect(err).toBeInstanceOf(StateError);
      expect((err as Error).message).toContain(`version ${STATE_SCHEMA_VERSION + 1}`);
      expect((err as Error).message).toContain(`up to ${STATE_SCHEMA_VERSION}`);
      // The handles opened before keep working; back to the known version for the cases after.
      await engine.setVersion(-1);
      const back = await engine.open();
      await back.close();
    });
  });
}

describe("SQLite: a state.db made by the releases before versioning", () => {
  it("opens, migrates in place and keeps every row (secret, used step, recovery code, invitation, failures)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "varco-oldstate-"));
    dirs.push(dir);
    const key = randomBytes(32);
    writeFileSync(join(dir, "totp.key"), key, { mode: 0o600 });
    // The CREATE statements of src/auth/totp.ts and src/auth/lockout.ts before src/state existed.
    const db = new Database(join(dir, "state.db"));
    db.exec(`
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
CREATE INDEX IF NOT EXISTS auth_failures_source ON auth_failures(source, at);`);
    // A secret sealed the way the old code did (AES-256-GCM, uid as additional data), step T0 used.
    const secret = newSecret();
    const nonce = randomBytes(12);
    const c = createCipheriv("aes-256-gcm", key, nonce);
    c.setAAD(Buffer.from("old"));
    const ciphertext = Buffer.concat([c.update(secret, "utf8"), c.final()]);
    const step = Math.floor(T0 / 30_000);
    db.prepare("INSERT INTO totp VALUES (?, ?, ?, ?, ?, ?)").run("old", nonce, ciphertext, c.getAuthTag(), step, "2026-01-01T00:00:00Z");
    db.prepare("INSERT INTO totp_steps VALUES (?, ?)").run("dir", step);
    db.prepare("INSERT INTO totp_invitations VALUES (?, ?, ?, ?)").run("newbie", "mac", T0 + 60_000, T0);
    for (let i = 0; i < 3; i++) db.prepare("INSERT INTO auth_failures VALUES (?, ?, ?)").run("locked", "192.0.2.1", T0 + i);
    db.close();

    const store = openTotpStore(dir, SETTINGS);
    expect(await store.verifyCode("old", currentCode(SETTINGS, secret, T0), T0)).toBe(false); // used before the upgrade
    expect(await store.verifyCode("old", currentCode(SETTINGS, secret, T0 + 30_000), T0 + 30_000)).toBe(true);
    expect(await store.hasInvitation("newbie", T0)).toBe(true);
    expect(await store.verifyExternal("dir", secret, currentCode(SETTINGS, secret, T0), T0)).toBe(false);
    await store.close();
    const state = await openState({ stateDir: dir, resolvePath: (p) => p });
    expect(await state.schemaVersion()).toBe(STATE_SCHEMA_VERSION);
    expect((await lockoutOn(state, LOCK).locked("locked", "x", T0 + 10)).uid).toBe(true);
    await state.close();
  });
});

describe("SQLite: a state.db of schema version 4 with remembered second factors", () => {
  it("migrates in place: the entries are kept, bound to no TOTP secret, so none is honoured again", async () => {
    const dir = mkdtempSync(join(tmpdir(), "varco-v4state-"));
    dirs.push(dir);
    const db = new Database(join(dir, "state.db"));
    db.exec("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)");
    for (const m of SQLITE_MIGRATIONS.filter((x) => x.version <= 4)) {
      db.exec(m.sql);
      db.prepare("INSERT INTO schema_version VALUES (?, 'test')").run(m.version);
    }
    db.prepare("INSERT INTO mfa_remembered VALUES (?, ?, ?, ?, ?)").run("mario", "SHA256:k", "192.0.2.0/24", T0, T0 + 3_600_000);
    db.close();
    const state = await openSqliteState(dir);
    expect(await state.schemaVersion()).toBe(STATE_SCHEMA_VERSION);
    await expectUnbound(state, "mario");
    await state.close();
  });
});

/** The version-4 entry of `uid` (key SHA256:k, 192.0.2.0/24) is kept, bound to no TOTP secret, and honoured for none. */
async function expectUnbound(state: AuthState, uid: string): Promise<void> {
  const row = await state.remembered(uid, "SHA256:k", "192.0.2.0/24", T0 + 1);
  expect(row?.totpBinding).toBe("");
  const want = { uid, keyFp: "SHA256:k", sourceNet: "192.0.2.0/24" };
  expect(rememberedValid(row, { ...want, totpBinding: LOCAL_TOTP_BINDING }, T0 + 1, 3_600_000)).toBe(false);
  expect(rememberedValid(row, { ...want, totpBinding: directorySecretBinding(randomBytes(32), uid, newSecret()) }, T0 + 1, 3_600_000)).toBe(
    false,
  );
}

describe.skipIf(!havePostgres)("PostgreSQL: a state of schema version 4 with remembered second factors", () => {
  // Its own server: the shared one above already holds the current schema.
  let old: TestPostgres | undefined;
  beforeAll(async () => {
    old = await startPostgres();
  }, 120_000);
  afterAll(async () => {
    await old?.destroy();
  });

  it("two gateways migrate it at once: one migration, the entries kept and bound to nothing; a version-4 binary's inserts still work", async () => {
    const p = old as TestPostgres;
    await p.psql("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)");
    for (const m of POSTGRES_MIGRATIONS.filter((x) => x.version <= 4)) {
      await p.psql(m.sql);
      await p.psql(`INSERT INTO schema_version VALUES (${m.version}, 'test')`);
    }
    for (const t of [
      "schema_version",
      "totp",
      "totp_steps",
      "recovery_codes",
      "totp_invitations",
      "auth_failures",
      "mfa_remembered",
      "state_meta",
    ])
      await p.psql(`ALTER TABLE IF EXISTS ${t} OWNER TO varco`);
    const insertV4 = (uid: string) =>
      p.psql(
        `INSERT INTO mfa_remembered (uid, key_fp, source_net, created_at_ms, expires_at_ms) VALUES ('${uid}', 'SHA256:k', '192.0.2.0/24', ${T0}, ${T0 + 3_600_000})`,
      );
    await insertV4("mario");
    const [a, b] = await Promise.all([openPostgresState(p.url), openPostgresState(p.url)]);
    try {
      expect(await a.schemaVersion()).toBe(STATE_SCHEMA_VERSION);
      expect((await p.psql("SELECT count(*) FROM schema_version WHERE version = 5")).trim()).toMatch(/\b1\b/);
      await expectUnbound(b, "mario");
      // During a rolling upgrade a version-4 node inserts without totp_binding: bound to nothing.
      await insertV4("anna");
      await expectUnbound(a, "anna");
    } finally {
      await a.close();
      await b.close();
    }
  }, 120_000);
});

describe.skipIf(!havePostgres)("PostgreSQL unreachable", () => {
  it("every call rejects with a StateError naming the server without its password; the TOTP check does not say 'wrong code'", async () => {
    const p = pg as TestPostgres;
    const state = await openPostgresState(p.url, { connectTimeoutMs: 2000 });
    const store = totpStoreOn(state, KEY, SETTINGS);
    await p.stop();
    try {
      const err = await store.verifyCode("u", "123456", T0).then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(err).toBeInstanceOf(StateError);
      expect((err as Error).message).toContain("login state unavailable");
      expect((err as Error).message).not.toContain(new URL(p.url).password);
      await expect(lockoutOn(state, LOCK).fail("u", "192.0.2.1", T0)).rejects.toBeInstanceOf(StateError);
      await expect(openPostgresState(p.url, { connectTimeoutMs: 2000 })).rejects.toBeInstanceOf(StateError);
    } finally {
      await p.start();
      await state.close();
    }
    // Back: the same handle works again (the pool reconnects).
    const again = await openPostgresState(p.url);
    await again.ping();
    await again.close();
  }, 60_000);
});
