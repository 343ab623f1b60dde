/**
 * The directory side with a real slapd: LDAPS and StartTLS with CA verification (a throwaway CA),
 * an untrusted certificate and a wrong host name refused with a clear log line, and groups read
 * from memberOf (the memberof overlay standing in for Active Directory).
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLdapDirectory, DirectoryUnavailableError, firstRdnValue } from "../../src/auth/index.ts";
import { type Slapd, startSlapd } from "../../src/demo/index.ts";
import { type Harness, startHarness } from "../helpers/harness.ts";
import { makePki, type TestPki } from "../helpers/tls.ts";

let slapd: Slapd;
let pki: TestPki;
let dir: string;
let h: Harness;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "varco-dir-"));
  pki = await makePki(dir, { ip: ["127.0.0.1"], dns: ["ldap.test"] });
  slapd = await startSlapd({
    dir: join(dir, "slapd"),
    users: [{ uid: "ada", password: "ada-pw", givenName: "Ada", sn: "L" }],
    groups: [
      { cn: "astro", gid: 1, members: ["ada"] },
      { cn: "ops", gid: 2, members: ["ada"] },
    ],
    servicePassword: "svc-pw",
    tls: pki,
    memberOf: true,
  });
  // The gateway end to end over LDAPS, with groups from memberOf.
  h = await startHarness({
    extraUsers: ["d01", "d02"],
    slapd: { tls: pki, memberOf: true },
    extraRoutes: `
  - groups: [testers]
    alias: vm1
    target: vm1-mario
`,
    templateEdit: (t) =>
      t
        .replace("url: @LDAP_URL@", `url: @LDAPS_URL@\n    tls: { ca_file: ${pki.caFile} }`)
        .replace('    group_filter: "(&(objectClass=posixGroup)(memberUid={uid}))"', "    group_attribute: memberOf"),
  });
});

afterAll(async () => {
  await h?.stop();
  await slapd?.stop();
});

const base = () => ({
  bindDn: slapd.bindDn,
  bindPassword: "svc-pw",
  userBase: `ou=people,${slapd.suffix}`,
  userFilter: "(&(objectClass=inetOrgPerson)(uid={uid}))",
  groupBase: `ou=groups,${slapd.suffix}`,
  groupFilter: "(member={dn})",
  sshKeyAttribute: "sshPublicKey",
  timeoutMs: 3000,
});

describe("LDAP over TLS", () => {
  it("binds over LDAPS with the CA from ca_file", async () => {
    const d = createLdapDirectory({ ...base(), url: slapd.ldapsUrl ?? "", caFile: pki.caFile, startTls: false });
    const v = await d.verifyPassword("ada", "ada-pw");
    expect(v.kind).toBe("ok");
    expect(await d.verifyPassword("ada", "wrong")).toEqual({ kind: "invalid" });
  });

  it("upgrades with StartTLS on the plain port", async () => {
    const d = createLdapDirectory({ ...base(), url: slapd.url, caFile: pki.caFile, startTls: true });
    expect((await d.verifyPassword("ada", "ada-pw")).kind).toBe("ok");
  });

  it("refuses a certificate from an untrusted CA, saying so", async () => {
    const d = createLdapDirectory({ ...base(), url: slapd.ldapsUrl ?? "", caFile: pki.otherCaFile, startTls: false });
    const err = await d.verifyPassword("ada", "ada-pw").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DirectoryUnavailableError);
    expect((err as Error).message).toMatch(/certificate|self[- ]signed|unable to verify/i);
    expect((err as Error).message).not.toContain("ada-pw");
    expect((err as Error).message).not.toContain("svc-pw");
  });

  it("refuses a certificate for another host name", async () => {
    const d = createLdapDirectory({
      ...base(),
      url: (slapd.ldapsUrl ?? "").replace("127.0.0.1", "localhost"),
      caFile: pki.caFile,
      startTls: false,
    });
    const err = await d.verifyPassword("ada", "ada-pw").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DirectoryUnavailableError);
    expect((err as Error).message).toMatch(/altnames|hostname|does not match/i);
  });
});

describe("Active Directory style groups", () => {
  it("reads groups from memberOf (first RDN of each group DN)", async () => {
    const d = createLdapDirectory({ ...base(), url: slapd.url, startTls: false, groupAttribute: "memberOf" });
    const v = await d.verifyPassword("ada", "ada-pw");
    expect(v.kind === "ok" && [...v.groups].sort()).toEqual(["astro", "ops"]);
    expect(firstRdnValue("CN=Domain Users,CN=Users,DC=corp,DC=example")).toBe("Domain Users");
    expect(firstRdnValue("cn=a\\,b,ou=groups")).toBe("a,b");
  });

  it("logs a real OpenSSH client in through the gateway over LDAPS, routed by a memberOf group", async () => {
    const r = await h.ssh("d01_vm1", ["echo over-ldaps"]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("over-ldaps\n");
  });
});

describe("TOTP secrets read from the directory (auth.totp.secrets: ldap)", () => {
  let h2: Harness;
  beforeAll(async () => {
    h2 = await startHarness({
      extraUsers: ["s01"],
      totpAttribute: "employeeNumber",
      templateEdit: (t) =>
        t.replace(
          "  chains: [[password, totp]]",
          "  chains: [[password, totp]]\n  totp: { secrets: ldap, ldap_attribute: employeeNumber }",
        ),
    });
  });
  afterAll(async () => {
    await h2?.stop();
  });

  it("logs in with the secret from the user's entry, once per code", async () => {
    const store = await import("../../src/auth/index.ts");
    const local = store.openTotpStore(`${h2.dir}/state`, { issuer: "varco", digits: 6, periodMs: 30_000, window: 1 });
    expect(local.hasSecret("s01")).toBe(false);
    local.close();
    const code = h2.nextCode("s01");
    const r = await h2.ssh("s01_vm1", ["echo from-directory-secret"], { code });
    expect(r.stdout).toBe("from-directory-secret\n");
    const replay = await h2.ssh("s01_vm1", ["true"], { code });
    expect(replay.exitCode).toBe(255);
  });
});
