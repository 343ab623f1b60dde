/**
 * An existing PostgreSQL login state at schema version 4 (with remembered second factors), migrated
 * to 5 by two gateways starting at once: one migration, the entries kept but bound to no TOTP secret
 * (never honoured again), and a version-4 binary's inserts still work during a rolling upgrade.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { directorySecretBinding, LOCAL_TOTP_BINDING, newSecret, rememberedValid } from "../../src/auth/index.ts";
import { openPostgresState, POSTGRES_MIGRATIONS, STATE_SCHEMA_VERSION } from "../../src/state/index.ts";
import { havePostgres, startPostgres, type TestPostgres } from "../helpers/postgres.ts";

const T0 = Date.UTC(2026, 10, 28, 9, 0, 0);
let pg: TestPostgres | undefined;

beforeAll(async () => {
  if (havePostgres) pg = await startPostgres();
}, 120_000);
afterAll(async () => {
  await pg?.destroy();
});

describe.skipIf(!havePostgres)("PostgreSQL state at version 4", () => {
  it("two gateways migrate it at once; old entries are kept, bound to nothing, never honoured", async () => {
    const p = pg as TestPostgres;
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
    await p.psql(
      `INSERT INTO mfa_remembered (uid, key_fp, source_net, created_at_ms, expires_at_ms) VALUES ('mario', 'SHA256:k', '192.0.2.0/24', ${T0}, ${T0 + 3_600_000})`,
    );
    const [a, b] = await Promise.all([openPostgresState(p.url), openPostgresState(p.url)]);
    try {
      expect(await a.schemaVersion()).toBe(STATE_SCHEMA_VERSION);
      expect((await p.psql("SELECT count(*) FROM schema_version WHERE version = 5")).trim()).toMatch(/\b1\b/);
      const row = await b.remembered("mario", "SHA256:k", "192.0.2.0/24", T0 + 1);
      expect(row?.totpBinding).toBe("");
      const want = { uid: "mario", keyFp: "SHA256:k", sourceNet: "192.0.2.0/24" };
      expect(rememberedValid(row, { ...want, totpBinding: LOCAL_TOTP_BINDING }, T0 + 1, 3_600_000)).toBe(false);
      expect(
        rememberedValid(row, { ...want, totpBinding: directorySecretBinding(randomBytes(32), "mario", newSecret()) }, T0 + 1, 3_600_000),
      ).toBe(false);
      // An INSERT of a v4 binary (no totp_binding) still works and binds to nothing.
      await p.psql(
        `INSERT INTO mfa_remembered (uid, key_fp, source_net, created_at_ms, expires_at_ms) VALUES ('anna', 'SHA256:k', '192.0.2.0/24', ${T0}, ${T0 + 3_600_000})`,
      );
      expect((await a.remembered("anna", "SHA256:k", "192.0.2.0/24", T0 + 1))?.totpBinding).toBe("");
    } finally {
      await a.close();
      await b.close();
    }
  }, 120_000);
});
