/**
 * `varco user totp invite`: the real CLI (node bin/varco.mjs) against a policy and state dir in a
 * temp folder: the printed code works once against the store, `--json`, the refusals (enrolment
 * off, secrets in the directory, an enrolled uid, bad durations) and the audit event, which never
 * holds the code.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openAuditStore } from "../../src/audit/index.ts";
import { newSecret, openTotpStore } from "../../src/auth/index.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const FORMAT = /[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}/;
const SETTINGS = { issuer: "varco", digits: 6 as const, periodMs: 30_000, window: 1 };

const policyText = (totp: string) => `version: 1
gateway:
  listen: ["127.0.0.1:2222"]
  state_dir: state
directory:
  ldap:
    url: ldap://127.0.0.1:389
    bind_dn: cn=varco,dc=example,dc=org
    bind_password_file: ldap.pw
    user_base: ou=people,dc=example,dc=org
auth:
  totp:
${totp}
targets:
  vm1:
    host: 10.0.0.1
    host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz"
routes:
  - users: [mario.rossi]
    alias: vm1
    target: vm1
`;

let dir: string;
let policy: string;
let policyOff: string;
let policyLdap: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "varco-invite-"));
  policy = join(dir, "gateway.yaml");
  policyOff = join(dir, "off.yaml");
  policyLdap = join(dir, "ldap.yaml");
  writeFileSync(policy, policyText("    enrol_on_first_login: true"), { mode: 0o600 });
  writeFileSync(policyOff, policyText("    enrol_on_first_login: false"), { mode: 0o600 });
  writeFileSync(policyLdap, policyText("    enrol_on_first_login: true\n    secrets: ldap\n    ldap_attribute: oathSecret"), {
    mode: 0o600,
  });
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const varco = (file: string, ...args: string[]) =>
  execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", file, ...args], { reject: false, timeout: 60_000 });
const stateDir = () => join(dir, "state");
const auditEvents = () => {
  const store = openAuditStore(join(stateDir(), "audit.db"));
  const events = store.eventsSince(0, 0, 10_000);
  store.close();
  return events;
};
/** Every byte the gateway keeps in its state dir (databases, WAL files). */
const rawState = () =>
  Buffer.concat(
    readdirSync(stateDir(), { withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => readFileSync(join(stateDir(), e.name))),
  );

describe("varco user totp invite", () => {
  it("prints a single-use code with its expiry and the separate-channel advice; the code works once", async () => {
    const before = Date.now();
    const r = await varco(policy, "user", "totp", "invite", "mario.rossi");
    expect(r.exitCode, r.stderr).toBe(0);
    const code = r.stdout.match(FORMAT)?.[0] as string;
    expect(code).toBeDefined();
    expect(r.stdout).toContain("mario.rossi");
    expect(r.stdout).toMatch(/separate channel/);
    const expiry = Date.parse(r.stdout.match(/valid until (\S+)\)/)?.[1] ?? "");
    expect(expiry).toBeGreaterThanOrEqual(before + 24 * 3_600_000 - 1000);
    expect(expiry).toBeLessThanOrEqual(Date.now() + 24 * 3_600_000 + 1000);

    const store = openTotpStore(stateDir(), SETTINGS);
    expect(await store.hasInvitation("mario.rossi", Date.now())).toBe(true);
    expect(await store.consumeInvitation("mario.rossi", code, Date.now())).toBe(true);
    expect(await store.consumeInvitation("mario.rossi", code, Date.now())).toBe(false);
    store.close();
  });

  it("--json prints exactly uid, code and expires_at; --valid sets the expiry; a new invitation replaces the old", async () => {
    const first = await varco(policy, "user", "totp", "invite", "anna.bianchi", "--json");
    expect(first.exitCode, first.stderr).toBe(0);
    const a = JSON.parse(first.stdout) as Record<string, string>;
    const before = Date.now();
    const second = await varco(policy, "user", "totp", "invite", "anna.bianchi", "--valid", "30m", "--json");
    expect(second.exitCode, second.stderr).toBe(0);
    const b = JSON.parse(second.stdout) as Record<string, string>;
    expect(Object.keys(b).sort()).toEqual(["code", "expires_at", "uid"]);
    expect(b.uid).toBe("anna.bianchi");
    expect(b.code).toMatch(new RegExp(`^${FORMAT.source}$`));
    expect(b.code).not.toBe(a.code);
    const expiry = Date.parse(b.expires_at as string);
    expect(expiry).toBeGreaterThanOrEqual(before + 30 * 60_000 - 1000);
    expect(expiry).toBeLessThanOrEqual(Date.now() + 30 * 60_000 + 1000);

    const store = openTotpStore(stateDir(), SETTINGS);
    expect(await store.consumeInvitation("anna.bianchi", a.code as string, Date.now())).toBe(false);
    expect(await store.consumeInvitation("anna.bianchi", b.code as string, Date.now())).toBe(true);
    store.close();
  });

  it("audits enrolment_invited with the uid and expiry, and the code is nowhere in the state dir", async () => {
    const r = await varco(policy, "user", "totp", "invite", "luca.verdi", "--json");
    expect(r.exitCode, r.stderr).toBe(0);
    const { code, expires_at } = JSON.parse(r.stdout) as { code: string; expires_at: string };
    const events = auditEvents().filter((e) => e.type === "enrolment_invited" && e.uid === "luca.verdi");
    expect(events).toHaveLength(1);
    expect(events[0]?.data).toEqual({ by: "cli", expires_at });
    const text = JSON.stringify(auditEvents());
    const bare = code.replaceAll("-", "");
    expect(text).not.toContain(code);
    expect(text.toLowerCase()).not.toContain(bare);
    const raw = rawState();
    expect(raw.includes(Buffer.from(code))).toBe(false);
    expect(raw.includes(Buffer.from(bare))).toBe(false);
  });

  it("refuses when enrolment at login is off, or secrets live in the directory, naming the key", async () => {
    const off = await varco(policyOff, "user", "totp", "invite", "mario.rossi");
    expect(off.exitCode).toBe(1);
    expect(off.stderr).toContain("auth.totp.enrol_on_first_login");
    expect(off.stdout).not.toMatch(FORMAT);
    const ldap = await varco(policyLdap, "user", "totp", "invite", "mario.rossi", "--json");
    expect(ldap.exitCode).toBe(1);
    expect(ldap.stderr).toContain("auth.totp.secrets");
    expect(ldap.stdout).toBe("");
  });

  it("refuses a uid that already has a secret until it is reset; reset also drops a pending invitation", async () => {
    const store = openTotpStore(stateDir(), SETTINGS);
    await store.setSecret("enrolled.user", newSecret());
    store.close();
    const r = await varco(policy, "user", "totp", "invite", "enrolled.user");
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain("varco user totp reset enrolled.user");
    expect(r.stdout).not.toMatch(FORMAT);
    expect(auditEvents().filter((e) => e.type === "enrolment_invited" && e.uid === "enrolled.user")).toHaveLength(0);

    expect((await varco(policy, "user", "totp", "reset", "enrolled.user")).exitCode).toBe(0);
    const again = await varco(policy, "user", "totp", "invite", "enrolled.user", "--json");
    expect(again.exitCode, again.stderr).toBe(0);
    const { code } = JSON.parse(again.stdout) as { code: string };
    // A second reset (no secret any more) still forgets the invitation.
    await varco(policy, "user", "totp", "reset", "enrolled.user");
    const s = openTotpStore(stateDir(), SETTINGS);
    expect(await s.hasInvitation("enrolled.user", Date.now())).toBe(false);
    expect(await s.consumeInvitation("enrolled.user", code, Date.now())).toBe(false);
    s.close();
  });

  it("refuses durations that are not positive (usage error, exit 2) and creates nothing", async () => {
    for (const bad of ["0s", "-1h", "tomorrow", "24", ""]) {
      const r = await varco(policy, "user", "totp", "invite", "bad.duration", "--valid", bad);
      expect(r.exitCode, bad).toBe(2);
      expect(r.stdout).not.toMatch(FORMAT);
    }
    const s = openTotpStore(stateDir(), SETTINGS);
    expect(await s.hasInvitation("bad.duration", Date.now())).toBe(false);
    s.close();
  });
});
