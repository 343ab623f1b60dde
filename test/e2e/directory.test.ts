/**
 * The directory side with a real slapd: LDAPS and StartTLS with CA verification (a throwaway CA),
 * an untrusted certificate and a wrong host name refused with a clear log line, groups read
 * from memberOf (the memberof overlay standing in for Active Directory), the canonical uid,
 * account status (ppolicy locks, shadowExpire, nsAccountLock and AD attributes from a test schema),
 * and the same LDAP operations for unknown users as for known ones.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { Client } from "ldapts";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createLdapDirectory, DirectoryUnavailableError, firstRdnValue } from "../../src/auth/index.ts";
import { epochDays, fileTime, type LdapConfig } from "../../src/auth/ldap.ts";
import { type Slapd, type SlapdOptions, startSlapd } from "../../src/demo/index.ts";
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
  rmSync(dir, { recursive: true, force: true });
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
    expect(await d.verifyPassword("ada", "wrong")).toEqual({ kind: "invalid", reason: "wrong password" });
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
    expect(await local.hasSecret("s01")).toBe(false);
    local.close();
    const code = h2.nextCode("s01");
    const r = await h2.ssh("s01_vm1", ["echo from-directory-secret"], { code });
    expect(r.stdout).toBe("from-directory-secret\n");
    const replay = await h2.ssh("s01_vm1", ["true"], { code });
    expect(replay.exitCode).toBe(255);
  });
});

/**
 * Attribute types some directories have and Debian's slapd does not, under their real OIDs: 389/FreeIPA
 * nsAccountLock, AD userAccountControl, accountExpires and sAMAccountName, on an auxiliary class.
 */
const STATUS_SCHEMA = `attributetype ( 2.16.840.1.113730.3.1.610 NAME 'nsAccountLock'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.159 NAME 'accountExpires'
  EQUALITY integerMatch ORDERING integerOrderingMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 2.25.3486516057986555468646954615500534129.1 NAME 'varcoTestAccount' AUXILIARY
  MAY ( nsAccountLock $ userAccountControl $ accountExpires $ sAMAccountName ) )
`;

describe("canonical uid and account status (slapd with ppolicy and a status schema)", () => {
  let pp: Slapd;
  let ppDir: string;
  const today = epochDays(Date.now());
  const user = (uid: string, extra: { objectClasses?: string[]; attributes?: Record<string, string | string[]> } = {}) => ({
    uid,
    password: `${uid}-pw`,
    givenName: uid,
    sn: "Test",
    ...extra,
  });
  const aux = (attributes: Record<string, string | string[]>) => ({ objectClasses: ["varcoTestAccount"], attributes });
  const shadow = (days: number) => ({ objectClasses: ["shadowAccount"], attributes: { shadowExpire: String(days) } });

  beforeAll(async () => {
    ppDir = mkdtempSync(join(tmpdir(), "varco-dir-pp-"));
    pp = await startSlapd({
      dir: join(ppDir, "slapd"),
      servicePassword: "svc-pw",
      ppolicy: { maxFailure: 2 },
      schema: STATUS_SCHEMA,
      users: [
        user("mario.rossi", aux({ sAMAccountName: "MRossi" })),
        user("locked", { attributes: { pwdAccountLockedTime: "000001010000Z" } }),
        user("tolock"),
        user("expired", shadow(today - 1)),
        user("expires.today", shadow(today)),
        user("expires.later", shadow(today + 30)),
        user("nslocked", aux({ nsAccountLock: "TRUE" })),
        user("nsunlocked", aux({ nsAccountLock: "false" })),
        user("ad.disabled", aux({ userAccountControl: "514", sAMAccountName: "ADDisabled" })),
        user("ad.enabled", aux({ userAccountControl: "512", accountExpires: "0", sAMAccountName: "ADEnabled" })),
        user("ad.expired", aux({ accountExpires: String(fileTime(Date.now() - 3_600_000)) })),
        user("contractor", { attributes: { employeeType: "contractor" } }),
        user("two.uids", { attributes: { uid: ["two.uids", "alias.uid"] } }),
      ],
      groups: [
        { cn: "astro", gid: 1, members: ["mario.rossi", "locked", "two.uids"] },
        { cn: "ops", gid: 2, members: ["mario.rossi"] },
      ],
    });
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    await pp?.stop();
    rmSync(ppDir, { recursive: true, force: true });
  });

  const cfg = (o: Partial<LdapConfig> = {}): LdapConfig => ({
    url: pp.url,
    bindDn: pp.bindDn,
    bindPassword: "svc-pw",
    userBase: `ou=people,${pp.suffix}`,
    userFilter: "(&(objectClass=inetOrgPerson)(uid={uid}))",
    groupBase: `ou=groups,${pp.suffix}`,
    groupFilter: "(&(objectClass=posixGroup)(memberUid={uid}))",
    sshKeyAttribute: "sshPublicKey",
    startTls: false,
    timeoutMs: 3000,
    ...o,
  });

  it("returns the entry's own uid for every spelling LDAP matches, with the groups of that uid", async () => {
    const d = createLdapDirectory(cfg());
    for (const typed of ["mario.rossi", "Mario.Rossi", "MARIO.ROSSI", " mario.rossi", "mario.rossi ", "  MaRiO.rOsSi  "]) {
      const l = await d.lookup(typed);
      expect(l.kind === "ok" && { uid: l.uid, groups: [...l.groups].sort() }).toEqual({ uid: "mario.rossi", groups: ["astro", "ops"] });
      const v = await d.verifyPassword(typed, "mario.rossi-pw");
      expect(v.kind === "ok" && v.uid).toBe("mario.rossi");
    }
    // A name LDAP does not match is no user, not a near miss.
    expect((await d.lookup("mario.ross")).kind).toBe("invalid");
    expect((await d.lookup("mario.rossi*")).kind).toBe("invalid");
    expect((await d.lookup("*")).kind).toBe("invalid");
    expect((await d.verifyPassword("Mario.Rossi", "MARIO.ROSSI-PW")).kind).toBe("invalid");
  });

  it("takes the canonical uid from uid_attribute (AD sAMAccountName), whatever the user typed", async () => {
    const d = createLdapDirectory(
      cfg({ uidAttribute: "sAMAccountName", userFilter: "(&(objectClass=inetOrgPerson)(sAMAccountName={uid}))" }),
    );
    for (const typed of ["mrossi", "MROSSI", "MRossi "]) {
      const v = await d.verifyPassword(typed, "mario.rossi-pw");
      expect(v.kind === "ok" && v.uid).toBe("MRossi");
    }
    // The attribute name in the configuration need not match the server's spelling.
    const lower = createLdapDirectory(cfg({ uidAttribute: "samaccountname" }));
    const l = await lower.lookup("mario.rossi");
    expect(l.kind === "ok" && l.uid).toBe("MRossi");
  });

  it("refuses an entry whose uid attribute is missing or multi-valued, saying why", async () => {
    const d = createLdapDirectory(cfg());
    const two = await d.lookup("alias.uid");
    expect(two).toEqual({ kind: "invalid", reason: expect.stringMatching(/uid has 2 values/) });
    expect((await d.verifyPassword("two.uids", "two.uids-pw")).kind).toBe("invalid");
    const sam = createLdapDirectory(cfg({ uidAttribute: "sAMAccountName" }));
    expect(await sam.lookup("tolock")).toEqual({ kind: "invalid", reason: expect.stringMatching(/sAMAccountName has 0 values/) });
    expect((await sam.verifyPassword("tolock", "tolock-pw")).kind).toBe("invalid");
  });

  it("refuses locked, disabled and expired accounts as inactive on both paths, and lets active ones in", async () => {
    const d = createLdapDirectory(cfg());
    const cases: Array<[string, RegExp | undefined]> = [
      ["locked", /pwdAccountLockedTime/],
      ["expired", /shadowExpire/],
      ["expires.today", /shadowExpire/],
      ["nslocked", /nsAccountLock/],
      ["ad.disabled", /ACCOUNTDISABLE/],
      ["ad.expired", /accountExpires/],
      ["mario.rossi", undefined],
      ["expires.later", undefined],
      ["nsunlocked", undefined],
      ["ad.enabled", undefined],
    ];
    for (const [uid, reason] of cases) {
      const l = await d.lookup(uid);
      const v = await d.verifyPassword(uid, `${uid}-pw`);
      if (reason) {
        expect(l, uid).toEqual({ kind: "inactive", uid, dn: `uid=${uid},ou=people,${pp.suffix}`, reason: expect.stringMatching(reason) });
        expect(v, uid).toMatchObject({ kind: "inactive", uid, reason: expect.stringMatching(reason) });
        // A wrong password does not turn an inactive account into an invalid one, nor into ok.
        expect((await d.verifyPassword(uid, "wrong")).kind, uid).toBe("inactive");
      } else {
        expect(l.kind, uid).toBe("ok");
        expect(v.kind, uid).toBe("ok");
      }
    }
    // A spelling variant of an inactive account is the same inactive account.
    expect(await d.lookup(" LOCKED ")).toMatchObject({ kind: "inactive", uid: "locked" });
  });

  it("turns away an account slapd's ppolicy locks after failed binds, on the key path too", async () => {
    const d = createLdapDirectory(cfg());
    expect((await d.lookup("tolock")).kind).toBe("ok");
    expect((await d.verifyPassword("tolock", "guess-1")).kind).toBe("invalid");
    expect((await d.verifyPassword("tolock", "guess-2")).kind).toBe("invalid");
    // pwdMaxFailure 2: slapd has set pwdAccountLockedTime; the right password no longer helps...
    expect(await d.verifyPassword("tolock", "tolock-pw")).toMatchObject({
      kind: "inactive",
      reason: expect.stringMatching(/pwdAccountLockedTime/),
    });
    // ...and a key login (no bind at all) is refused as well.
    expect((await d.lookup("tolock")).kind).toBe("inactive");
    // An administrator unlocks it: both paths work again.
    await pp.modify(`dn: uid=tolock,ou=people,${pp.suffix}\nchangetype: modify\ndelete: pwdAccountLockedTime\n`);
    expect((await d.lookup("tolock")).kind).toBe("ok");
    expect((await d.verifyPassword("tolock", "tolock-pw")).kind).toBe("ok");
  });

  it("applies account_filter on both paths, with time placeholders, on top of the built-in checks", async () => {
    const d = createLdapDirectory(
      cfg({ accountFilter: "(&(!(employeeType=contractor))(|(!(accountExpires=*))(accountExpires=0)(accountExpires>={now_filetime})))" }),
    );
    expect(await d.lookup("contractor")).toMatchObject({
      kind: "inactive",
      uid: "contractor",
      reason: expect.stringMatching(/account_filter/),
    });
    expect((await d.verifyPassword("contractor", "contractor-pw")).kind).toBe("inactive");
    expect((await d.lookup("mario.rossi")).kind).toBe("ok");
    expect((await d.lookup("ad.enabled")).kind).toBe("ok");
    expect((await d.lookup("ad.expired")).kind).toBe("inactive");
    expect((await d.lookup("locked")).kind).toBe("inactive");
    // The AD form works too (slapd knows integerBitAndMatch).
    const ad = createLdapDirectory(cfg({ accountFilter: "(!(userAccountControl:1.2.840.113556.1.4.803:=2))" }));
    expect((await ad.lookup("ad.enabled")).kind).toBe("ok");
    expect(await ad.lookup("ad.disabled")).toMatchObject({ kind: "inactive" });
    // {uid} is the canonical uid, escaped: a filter pinned to one user matches only that user.
    const pinned = createLdapDirectory(cfg({ accountFilter: "(uid={uid})" }));
    expect((await pinned.lookup("MARIO.ROSSI")).kind).toBe("ok");
    expect(() => createLdapDirectory(cfg({ accountFilter: "(uid={user})" }))).toThrow(/placeholder/);
  });

  it("runs the same LDAP operations for unknown, refused, inactive and active users", async () => {
    const calls: string[] = [];
    const search = vi.spyOn(Client.prototype, "search");
    const bind = vi.spyOn(Client.prototype, "bind");
    const unbind = vi.spyOn(Client.prototype, "unbind");
    const trace = async (fn: () => Promise<unknown>) => {
      calls.length = 0;
      search.mockClear();
      bind.mockClear();
      unbind.mockClear();
      await fn();
      const ops = [
        ...search.mock.calls.map(
          (c, i) => [search.mock.invocationCallOrder[i] ?? 0, `search ${(c[1] as { scope?: string }).scope}`] as const,
        ),
        ...bind.mock.calls.map((_, i) => [bind.mock.invocationCallOrder[i] ?? 0, "bind"] as const),
        ...unbind.mock.calls.map((_, i) => [unbind.mock.invocationCallOrder[i] ?? 0, "unbind"] as const),
      ];
      return ops.sort((a, b) => a[0] - b[0]).map((o) => o[1]);
    };
    try {
      const d = createLdapDirectory(cfg({ accountFilter: "(!(employeeType=contractor))" }));
      const names = ["mario.rossi", "no.such.user", "locked", "contractor", "two.uids"];
      for (const path of ["lookup", "verifyPassword"] as const) {
        const seen = new Map<string, string[]>();
        for (const uid of names)
          seen.set(uid, await trace(() => (path === "lookup" ? d.lookup(uid) : d.verifyPassword(uid, "some-password"))));
        const known = seen.get("mario.rossi") ?? [];
        // service bind, user search, group search, account_filter base search, unbind (+ user bind, unbind).
        expect(known).toEqual([
          "bind",
          "search sub",
          "search sub",
          "search base",
          "unbind",
          ...(path === "verifyPassword" ? ["bind", "unbind"] : []),
        ]);
        for (const uid of names) expect(seen.get(uid), `${path} ${uid}`).toEqual(known);
      }
    } finally {
      search.mockRestore();
      bind.mockRestore();
      unbind.mockRestore();
    }
  });

  it("tells the doctor which configured attribute types the server does not know", async () => {
    expect(await createLdapDirectory(cfg()).unknownAttributes()).toEqual([]);
    expect(
      await createLdapDirectory(cfg({ uidAttribute: "sAMAccountName", accountFilter: "(!(nsAccountLock=TRUE))" })).unknownAttributes(),
    ).toEqual([]);
    expect(
      await createLdapDirectory(cfg({ uidAttribute: "userPrincipalName", accountFilter: "(!(isDisabled=TRUE))" })).unknownAttributes(),
    ).toEqual(["userPrincipalName", "isDisabled"]);
  });
});

describe("a directory without ppolicy or the status schemas", () => {
  const plain = (o: Partial<LdapConfig> = {}): LdapConfig => ({
    ...base(),
    url: slapd.url,
    startTls: false,
    groupAttribute: "memberOf",
    ...o,
  });

  it("keeps logging users in with the defaults on both paths", async () => {
    const d = createLdapDirectory(plain());
    expect(await d.lookup("ADA")).toMatchObject({ kind: "ok", uid: "ada" });
    expect(await d.verifyPassword("ada", "ada-pw")).toMatchObject({ kind: "ok", uid: "ada" });
    expect(await d.unknownAttributes()).toEqual([]);
  });

  it("shows why status rules are not a default filter: a filter naming an unknown type refuses everyone", async () => {
    // RFC 4511 §4.5.1.7: (pwdAccountLockedTime=*) is Undefined here, and so is its negation.
    const d = createLdapDirectory(plain({ accountFilter: "(!(pwdAccountLockedTime=*))" }));
    expect(await d.lookup("ada")).toMatchObject({ kind: "inactive", reason: expect.stringMatching(/account_filter/) });
    expect(await d.unknownAttributes()).toEqual(["pwdAccountLockedTime"]);
  });
});

describe("through the gateway: a ppolicy-locked account with an authorized key and a valid code", () => {
  let g: Harness;
  let gDir: string;
  beforeAll(async () => {
    gDir = mkdtempSync(join(tmpdir(), "varco-dir-gw-"));
    mkdirSync(join(gDir, "userkeys"), { recursive: true });
    for (const u of ["p01", "p02"]) {
      await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(gDir, u)]);
      writeFileSync(join(gDir, `userkeys/${u}.pub`), readFileSync(join(gDir, `${u}.pub`)));
    }
    // Through a variable: the harness passes any slapd option on; its type names only tls and memberOf.
    const slapdOptions: Pick<SlapdOptions, "memberOf" | "ppolicy"> = { memberOf: false, ppolicy: { maxFailure: 3 } };
    g = await startHarness({
      dir: gDir,
      extraUsers: ["p01", "p02"],
      slapd: slapdOptions,
      templateEdit: (t) =>
        t.replace("  chains: [[password, totp]]", '  chains: [[publickey, totp]]\n  publickey: { keys_file: "userkeys/{uid}.pub" }'),
    });
  });
  afterAll(async () => {
    await g?.stop();
  });

  const keyLogin = (uid: string) =>
    execa(
      "ssh",
      [
        ...g.sshOptions(["-o", "PubkeyAuthentication=yes", "-i", join(gDir, uid), "-o", "IdentitiesOnly=yes"]),
        `${uid}_vm1@127.0.0.1`,
        "echo in",
      ],
      { reject: false, env: g.askpassEnv("not-used", g.nextCode(uid)), stdin: "ignore" },
    );
  const lockedTime = (uid: string, op: "add" | "delete") =>
    g.env.slapd.modify(
      `dn: uid=${uid},ou=people,${g.env.slapd.suffix}\nchangetype: modify\n${op}: pwdAccountLockedTime\n${op === "add" ? "pwdAccountLockedTime: 000001010000Z\n" : ""}`,
    );

  it("refuses it, lets the same setup in for an active account, and again once unlocked", async () => {
    await lockedTime("p02", "add");
    const locked = await keyLogin("p02");
    expect(locked.exitCode).toBe(255);
    expect(locked.stdout).toBe("");
    const active = await keyLogin("p01");
    expect(active.stdout).toBe("in");
    await lockedTime("p02", "delete");
    const unlocked = await keyLogin("p02");
    expect(unlocked.stdout).toBe("in");
  });
});
