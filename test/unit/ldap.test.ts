/**
 * The pure parts of the LDAP directory: account-status rules evaluated in code, canonical uid
 * checks, account_filter validation and placeholders, and the policy keys that configure them.
 */
import { describe, expect, it } from "vitest";
import {
  accountStatusProblem,
  attributeValues,
  canonicalUidProblem,
  checkAccountFilter,
  epochDays,
  fileTime,
  fillFilter,
  filterAttributes,
  generalizedTime,
} from "../../src/auth/ldap.ts";
import { formatIssue, PolicyError, parsePolicyText } from "../../src/policy/index.ts";

const NOW = Date.UTC(2026, 10, 28, 12, 0, 0); // 2026-11-28T12:00:00Z
const TODAY = epochDays(NOW);

describe("time units", () => {
  it("counts days since 1970 UTC, FILETIME from 1601 and GeneralizedTime", () => {
    expect(epochDays(0)).toBe(0);
    expect(epochDays(86_400_000 - 1)).toBe(0);
    expect(TODAY).toBe(20_785);
    // 1970-01-01 as FILETIME (a documented constant) and one second later.
    expect(fileTime(0)).toBe(116_444_736_000_000_000n);
    expect(fileTime(1000) - fileTime(0)).toBe(10_000_000n);
    expect(generalizedTime(NOW)).toBe("20261128120000Z");
  });
});

describe("accountStatusProblem", () => {
  const active = (e: Record<string, unknown>) => accountStatusProblem(e, NOW);

  it("passes an entry without any status attribute (a directory without those schemas)", () => {
    expect(active({ dn: "uid=a", uid: "a" })).toBeUndefined();
    // ldapts gives [] for a requested attribute the entry does not have.
    expect(active({ dn: "uid=a", pwdAccountLockedTime: [], shadowExpire: [], nsAccountLock: [], userAccountControl: [] })).toBeUndefined();
  });

  it("refuses a ppolicy lock (any pwdAccountLockedTime), whatever the case of the name", () => {
    expect(active({ pwdAccountLockedTime: "000001010000Z" })).toMatch(/pwdAccountLockedTime/);
    expect(active({ pwdaccountlockedtime: "20261128110000Z" })).toMatch(/pwdAccountLockedTime/);
    expect(active({ PWDACCOUNTLOCKEDTIME: ["20261128110000Z"] })).toMatch(/pwdAccountLockedTime/);
  });

  it("keeps refusing a ppolicy lock whose time lies in the past (pwdLockoutDuration is unknown to varco)", () => {
    expect(active({ pwdAccountLockedTime: "19700101000000Z" })).toMatch(/pwdAccountLockedTime/);
    expect(active({ pwdAccountLockedTime: "" })).toMatch(/pwdAccountLockedTime/);
  });

  it("expires shadowExpire on its day (shadow(5)), not before; -1 never expires", () => {
    expect(active({ shadowExpire: String(TODAY) })).toMatch(/expired/);
    expect(active({ shadowExpire: String(TODAY - 1) })).toMatch(/expired/);
    expect(active({ shadowExpire: "0" })).toMatch(/expired/);
    expect(active({ shadowExpire: String(TODAY + 1) })).toBeUndefined();
    expect(active({ shadowExpire: "-1" })).toBeUndefined();
    expect(active({ shadowExpire: " 99999 " })).toBeUndefined();
  });

  it("fails closed on status values that do not parse", () => {
    expect(active({ shadowExpire: "tomorrow" })).toMatch(/does not parse/);
    expect(active({ shadowExpire: "1e9" })).toMatch(/does not parse/);
    expect(active({ userAccountControl: "0x200" })).toMatch(/does not parse/);
    expect(active({ accountExpires: "" })).toMatch(/does not parse/);
    expect(active({ "msDS-User-Account-Control-Computed": "lots" })).toMatch(/does not parse/);
  });

  it("refuses nsAccountLock true in any case, accepts false", () => {
    for (const v of ["TRUE", "true", "True", " true "]) expect(active({ nsAccountLock: v })).toMatch(/nsAccountLock/);
    for (const v of ["FALSE", "false", ""]) expect(active({ nsAccountLock: v })).toBeUndefined();
    expect(active({ nsaccountlock: "true" })).toMatch(/nsAccountLock/);
  });

  it("refuses AD accounts with ACCOUNTDISABLE (bit 2) set, whatever else is set", () => {
    expect(active({ userAccountControl: "512" })).toBeUndefined(); // NORMAL_ACCOUNT
    expect(active({ userAccountControl: "514" })).toMatch(/ACCOUNTDISABLE/);
    expect(active({ userAccountControl: "66050" })).toMatch(/ACCOUNTDISABLE/); // + DONT_EXPIRE_PASSWORD
    expect(active({ userAccountControl: "66048" })).toBeUndefined();
    expect(active({ useraccountcontrol: "2" })).toMatch(/ACCOUNTDISABLE/);
    expect(active({ "msDS-User-Account-Control-Computed": "16" })).toMatch(/UF_LOCKOUT/);
    expect(active({ "msDS-User-Account-Control-Computed": "0" })).toBeUndefined();
  });

  it("expires AD accountExpires in the past; 0 and 2^63-1 mean never", () => {
    const now = fileTime(NOW);
    expect(active({ accountExpires: String(now - 1n) })).toMatch(/accountExpires/);
    expect(active({ accountExpires: String(now) })).toMatch(/accountExpires/);
    expect(active({ accountExpires: String(now + 10_000_000n) })).toBeUndefined();
    expect(active({ accountExpires: "0" })).toBeUndefined();
    expect(active({ accountExpires: "9223372036854775807" })).toBeUndefined();
    expect(active({ accountExpires: "1" })).toMatch(/accountExpires/);
  });
});

describe("canonical uid", () => {
  it("accepts ordinary names and refuses what would confuse logs and lookups", () => {
    expect(canonicalUidProblem("mario.rossi")).toBeUndefined();
    expect(canonicalUidProblem("Mario Rossi")).toBeUndefined();
    expect(canonicalUidProblem("")).toMatch(/empty/);
    expect(canonicalUidProblem(" mario")).toMatch(/white space/);
    expect(canonicalUidProblem("mario\t")).toMatch(/white space/);
    expect(canonicalUidProblem("ma\nrio")).toMatch(/control/);
    expect(canonicalUidProblem("ma\u0000rio")).toMatch(/control/);
    expect(canonicalUidProblem("ma\u009brio")).toMatch(/control/);
    expect(canonicalUidProblem("m".repeat(257))).toMatch(/256/);
  });

  it("reads attribute values case-insensitively, single or multi-valued, never the dn", () => {
    expect(attributeValues({ dn: "x", sAMAccountName: "MRossi" }, "samaccountname")).toEqual(["MRossi"]);
    expect(attributeValues({ dn: "x", uid: ["a", "b"] }, "UID")).toEqual(["a", "b"]);
    expect(attributeValues({ dn: "x", uid: [] }, "uid")).toEqual([]);
    expect(attributeValues({ dn: "x" }, "dn")).toEqual([]);
    expect(attributeValues({ dn: "x", cn: Buffer.from("é") }, "cn")).toEqual(["é"]);
  });
});

describe("account_filter", () => {
  it("escapes placeholder values (RFC 4515), so a name cannot add filter terms", () => {
    expect(fillFilter("(uid={uid})", { uid: "*)(uid=*" })).toBe("(uid=\\2a\\29\\28uid=\\2a)");
    expect(fillFilter("(member={dn})", { dn: "cn=a\\,b" })).toBe("(member=cn=a\\5c,b)");
  });

  it("accepts known placeholders and well-formed filters, names the problem otherwise", () => {
    expect(() => checkAccountFilter("(!(userAccountControl:1.2.840.113556.1.4.803:=2))")).not.toThrow();
    expect(() => checkAccountFilter("(|(!(shadowExpire=*))(shadowExpire>={now_days}))")).not.toThrow();
    expect(() => checkAccountFilter("(|(accountExpires=0)(accountExpires>={now_filetime}))")).not.toThrow();
    expect(() => checkAccountFilter("(&(uid={uid})(!(pwdEndTime<={now_gentime})))")).not.toThrow();
    expect(() => checkAccountFilter("(uid={user})")).toThrow(/unknown placeholder \{user\}/);
    expect(() => checkAccountFilter("(uid=a")).toThrow(/not an LDAP filter/);
    expect(() => checkAccountFilter("uid=a)(")).toThrow(/not an LDAP filter/);
  });

  it("lists the attributes a filter tests (for the doctor's schema check)", () => {
    expect(filterAttributes("(&(!(pwdAccountLockedTime=*))(|(shadowExpire>=1)(uid=a*b)))").sort()).toEqual(
      ["pwdAccountLockedTime", "shadowExpire", "uid"].sort(),
    );
    expect(filterAttributes("(!(userAccountControl:1.2.840.113556.1.4.803:=2))")).toEqual(["userAccountControl"]);
  });
});

const POLICY = (ldapExtra: string) => `version: 1
gateway:
  listen: ["127.0.0.1:2222"]
directory:
  ldap:
    url: ldap://127.0.0.1:389
    bind_dn: cn=varco,dc=example,dc=org
    bind_password_file: secrets/ldap.pw
    user_base: ou=people,dc=example,dc=org
${ldapExtra}targets:
  vm1:
    host: 10.0.0.1
    host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz"
routes:
  - users: [mario.rossi]
    alias: vm1
    target: vm1
`;

function issues(text: string): string[] {
  try {
    parsePolicyText(text, "/p/gateway.yaml");
  } catch (err) {
    if (err instanceof PolicyError) return err.issues.map(formatIssue);
    throw err;
  }
  return [];
}

describe("policy keys", () => {
  it("defaults uid_attribute to uid and leaves account_filter unset", () => {
    const { policy } = parsePolicyText(POLICY(""), "/p/gateway.yaml");
    expect(policy.directory.ldap?.uid_attribute).toBe("uid");
    expect(policy.directory.ldap?.account_filter).toBeUndefined();
  });

  it("takes AD settings", () => {
    const { policy } = parsePolicyText(
      POLICY(`    uid_attribute: sAMAccountName\n    account_filter: "(!(userAccountControl:1.2.840.113556.1.4.803:=2))"\n`),
      "/p/gateway.yaml",
    );
    expect(policy.directory.ldap?.uid_attribute).toBe("sAMAccountName");
    expect(policy.directory.ldap?.account_filter).toBe("(!(userAccountControl:1.2.840.113556.1.4.803:=2))");
  });

  it("refuses an attribute name that is not one, and malformed filters or placeholders", () => {
    expect(issues(POLICY('    uid_attribute: "uid)(cn=*"\n')).join("\n")).toMatch(/uid_attribute/);
    expect(issues(POLICY('    uid_attribute: ""\n')).join("\n")).toMatch(/uid_attribute/);
    expect(issues(POLICY('    account_filter: "nsAccountLock=TRUE"\n')).join("\n")).toMatch(/account_filter/);
    expect(issues(POLICY('    account_filter: "(!(nsAccountLock=TRUE)"\n')).join("\n")).toMatch(/account_filter/);
    expect(issues(POLICY('    account_filter: "(a=b))(c=d"\n')).join("\n")).toMatch(/account_filter/);
    expect(issues(POLICY('    account_filter: "(shadowExpire>={today})"\n')).join("\n")).toMatch(/placeholders/);
  });
});
