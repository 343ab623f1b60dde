/**
 * A remembered second factor (`auth.totp.remember`) with the real OpenSSH client (a user key and
 * the askpass helper for the code; the helper records every prompt, so "no code asked" is
 * observed, not assumed), a real slapd and the real gateway. The attacker's tries: a wrong code
 * after a full login (must pass only where remembered), another key of the same user, another
 * source network (127.0.1.1 is another /24 of loopback), a password login, a spelling of the uid,
 * and revocation by `varco user forget`, a lockout, a re-enrolment and a reload that turns it off.
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openAuditStore } from "../../src/audit/index.ts";
import { currentCode, newSecret } from "../../src/auth/index.ts";
import { type Harness, ROOT, startHarness } from "../helpers/harness.ts";

let h: Harness;
let dir: string;
const USERS = ["rm01", "rm02", "rm03", "rm04", "rm05", "rm06", "rm07", "rm08"];
const WRONG = "000000";
const TOTP = { issuer: "varco", digits: 6 as const, periodMs: 30_000, window: 1 };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "varco-remember-"));
  mkdirSync(join(dir, "userkeys"), { recursive: true });
  for (const k of ["ka", "kb"]) await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, k)]);
  const both = readFileSync(join(dir, "ka.pub"), "utf8") + readFileSync(join(dir, "kb.pub"), "utf8");
  for (const u of USERS) writeFileSync(join(dir, `userkeys/${u}.pub`), both);
  h = await startHarness({
    dir,
    extraUsers: USERS,
    templateEdit: (t) =>
      t
        .replace(
          "  chains: [[password, totp]]",
          '  chains: [[password, totp], [publickey, totp]]\n  totp: { remember: 8h }\n  publickey: { keys_file: "userkeys/{uid}.pub" }',
        )
        .replace(
          "  lockout: { max_failures_per_source: 1000 }",
          "  lockout: { max_failures: 3, within: 15m, lock_for: 15m, max_failures_per_source: 1000 }",
        ),
  });
}, 120_000);

afterAll(async () => {
  await h?.stop();
});

const events = (type: string, uid?: string) => {
  const store = openAuditStore(join(dir, "state/audit.db"));
  const out = store.allEvents().filter((e) => e.type === type && (uid === undefined || e.uid === uid));
  store.close();
  return out;
};

const varco = (...args: string[]) => execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, ...args], { reject: false });

let seq = 0;
/** A key login with the real client: `key` only (IdentitiesOnly), askpass answering `code`; returns what the askpass was asked. */
async function keyLogin(account: string, key: string, code: string, extra: readonly string[] = [], on: Harness = h) {
  const askLog = join(on.dir, `asked-${seq++}.log`);
  writeFileSync(askLog, "");
  const r = await execa(
    "ssh",
    [
      // One keyboard-interactive round: a wrong code counts one failure (three would lock the uid, which revokes its entries).
      ...on.sshOptions([
        ...extra,
        "-o",
        "PubkeyAuthentication=yes",
        "-i",
        join(on.dir, key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "NumberOfPasswordPrompts=1",
      ]),
      `${account}@127.0.0.1`,
      "echo in",
    ],
    {
      reject: false,
      // The password is wrong on purpose: a fallback to the password chain can never log in.
      env: { ...on.askpassEnv("not-the-password", code), VARCO_TEST_ASKPASS_LOG: askLog },
      stdin: "ignore",
      timeout: 60_000,
    },
  );
  const asked = readFileSync(askLog, "utf8").split("\n").filter(Boolean);
  return { exitCode: r.exitCode, stdout: String(r.stdout), asked, askedCode: asked.some((a) => a.includes("Verification code:")) };
}

const fingerprint = async (key: string) =>
  String((await execa("ssh-keygen", ["-l", "-E", "sha256", "-f", join(dir, `${key}.pub`)])).stdout).split(/\s+/)[1];

describe("remembered second factor", () => {
  it("after a full key + code login, the same key from the same network logs in without the code; audited on every use", async () => {
    const full = await keyLogin("rm01_vm1", "ka", h.nextCode("rm01"));
    expect(full.stdout).toBe("in");
    expect(full.askedCode).toBe(true);
    const first = events("login", "rm01").at(-1);
    expect(first?.data?.factors).toEqual(["publickey", "totp"]);
    expect(typeof first?.data?.remember_until).toBe("string");

    for (let i = 0; i < 2; i++) {
      const again = await keyLogin("rm01_vm1", "ka", WRONG);
      expect(again.stdout).toBe("in");
      expect(again.asked).toEqual([]);
    }
    const used = events("mfa_remembered", "rm01");
    expect(used).toHaveLength(2);
    const d = used[0]?.data ?? {};
    expect(d.key_fingerprint).toBe(await fingerprint("ka"));
    expect(d.source_net).toBe("127.0.0.0/24");
    const at = Date.parse(String(d.remembered_at));
    expect(Date.parse(String(d.expires_at)) - at).toBe(8 * 3600_000);
    // A remembered login never extends the period.
    expect(used[1]?.data?.remembered_at).toBe(d.remembered_at);
    const last = events("login", "rm01").at(-1);
    expect(last?.data?.factors).toEqual(["publickey"]);
    expect(last?.data?.remembered).toEqual(["totp"]);
    expect(last?.data?.remember_until).toBeUndefined();
  });

  it("another key of the same user needs the code", async () => {
    expect((await keyLogin("rm02_vm1", "ka", h.nextCode("rm02"))).stdout).toBe("in");
    const other = await keyLogin("rm02_vm1", "kb", WRONG);
    expect(other.exitCode).toBe(255);
    expect(other.askedCode).toBe(true);
    expect(events("mfa_remembered", "rm02")).toHaveLength(0);
    expect(events("lock", "rm02")).toHaveLength(0);
  });

  it("another source network (127.0.1.1, another /24) needs the code; the same /24 (127.0.0.2) does not", async () => {
    expect((await keyLogin("rm05_vm1", "ka", h.nextCode("rm05"))).stdout).toBe("in");
    const elsewhere = await keyLogin("rm05_vm1", "ka", WRONG, ["-o", "BindAddress=127.0.1.1"]);
    expect(elsewhere.exitCode).toBe(255);
    expect(elsewhere.askedCode).toBe(true);
    const sameNet = await keyLogin("rm05_vm1", "ka", WRONG, ["-o", "BindAddress=127.0.0.2"]);
    expect(sameNet.stdout).toBe("in");
    expect(sameNet.asked).toEqual([]);
    expect(events("lock", "rm05")).toHaveLength(0);
  });

  it("a password + code login always needs the code, even with a remembered key", async () => {
    expect((await keyLogin("rm04_vm1", "ka", h.nextCode("rm04"))).stdout).toBe("in");
    const askLog = join(dir, "asked-pw.log");
    writeFileSync(askLog, "");
    const pw = h.env.users.find((u) => u.uid === "rm04")?.password as string;
    const r = await h.ssh("rm04_vm1", ["echo in"], { password: pw, code: WRONG, env: { VARCO_TEST_ASKPASS_LOG: askLog } });
    expect(r.exitCode).toBe(255);
    expect(readFileSync(askLog, "utf8")).toContain("Verification code:");
  });

  it("varco user forget (any spelling of the uid) removes the entries: the next key login needs the code; audited", async () => {
    expect((await keyLogin("rm03_vm1", "ka", h.nextCode("rm03"))).stdout).toBe("in");
    // Another spelling of the uid shares the entry (the directory decides the canonical uid).
    const spelled = await keyLogin("RM03_vm1", "ka", WRONG);
    expect(spelled.stdout).toBe("in");
    expect(spelled.asked).toEqual([]);
    const f = await varco("user", "forget", "RM03");
    expect(f.exitCode).toBe(0);
    expect(f.stdout).toContain("rm03: 1 remembered second factor forgotten");
    expect(events("mfa_forgotten", "rm03").at(-1)?.data?.removed).toBe(1);
    const after = await keyLogin("rm03_vm1", "ka", WRONG);
    expect(after.exitCode).toBe(255);
    expect(after.askedCode).toBe(true);
    const json = await varco("user", "forget", "rm03", "--json");
    expect(JSON.parse(String(json.stdout))).toEqual({ uid: "rm03", removed: 0 });
    // Refused because forgotten, not because locked.
    expect(events("lock", "rm03")).toHaveLength(0);
  });

  it("a lockout of the uid revokes the entries (they stay gone after unlock)", async () => {
    expect((await keyLogin("rm06_vm1", "ka", h.nextCode("rm06"))).stdout).toBe("in");
    expect((await keyLogin("rm06_vm1", "ka", WRONG)).stdout).toBe("in");
    for (let i = 0; i < 3 && !events("lock", "rm06").some((e) => e.result === "uid_locked"); i++)
      await h.ssh("rm06_vm1", ["true"], { password: "wrong-password", code: WRONG });
    expect(events("lock", "rm06").some((e) => e.result === "uid_locked")).toBe(true);
    // Locked: the lockout is checked before anything is remembered.
    expect((await keyLogin("rm06_vm1", "ka", WRONG)).exitCode).toBe(255);
    expect((await varco("user", "unlock", "rm06")).exitCode).toBe(0);
    const after = await keyLogin("rm06_vm1", "ka", WRONG);
    expect(after.exitCode).toBe(255);
    expect(after.askedCode).toBe(true);
    expect(events("mfa_remembered", "rm06")).toHaveLength(1);
  });

  it("a re-enrolment of the TOTP secret revokes the entries", async () => {
    expect((await keyLogin("rm07_vm1", "ka", h.nextCode("rm07"))).stdout).toBe("in");
    expect((await keyLogin("rm07_vm1", "ka", WRONG)).asked).toEqual([]);
    const secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXQ";
    expect((await varco("user", "totp", "enroll", "rm07", "--secret", secret, "--json")).exitCode).toBe(0);
    const after = await keyLogin("rm07_vm1", "ka", WRONG);
    expect(after.exitCode).toBe(255);
    expect(after.askedCode).toBe(true);
    expect((await keyLogin("rm07_vm1", "ka", currentCode(TOTP, secret, Date.now()))).stdout).toBe("in");
    expect(events("lock", "rm07")).toHaveLength(0);
  });

  it("a key removed from the user's keys is refused even with a remembered entry", async () => {
    expect((await keyLogin("rm08_vm1", "ka", h.nextCode("rm08"))).stdout).toBe("in");
    expect((await keyLogin("rm08_vm1", "ka", WRONG)).asked).toEqual([]);
    writeFileSync(join(dir, "userkeys/rm08.pub"), readFileSync(join(dir, "kb.pub")));
    const r = await keyLogin("rm08_vm1", "ka", WRONG);
    expect(r.exitCode).toBe(255);
    expect(r.stdout).toBe("");
  });

  it("a period above 24h is refused; turning it off (reload) honours no stored entry", async () => {
    const policy = readFileSync(h.env.policyFile, "utf8");
    writeFileSync(h.env.policyFile, policy.replace("remember: 8h", "remember: 7d"));
    const check = await varco("policy", "check");
    expect(check.exitCode).toBe(1);
    expect(check.stderr).toContain("auth.totp.remember");
    expect(check.stderr).toContain("at most 24h");
    expect(await h.reloadGateway()).toBe("refused");
    writeFileSync(h.env.policyFile, policy.replace("remember: 8h", "remember: 0s"));
    expect(await h.reloadGateway()).toBe("reloaded");
    // rm01 has a stored entry (first case): off means asked.
    const r = await keyLogin("rm01_vm1", "ka", WRONG);
    expect(r.exitCode).toBe(255);
    expect(r.askedCode).toBe(true);
  });
});

describe("remembered second factor with TOTP secrets in the directory (auth.totp.secrets: ldap)", () => {
  // The directory is changed behind varco's back: a remembered entry must follow the secret it stood in for.
  let hl: Harness;
  const LDAP_USERS = ["rl01", "rl02", "rl03"];
  const lastStep = new Map<string, number>();
  /** A code of `secret` for a step `uid` has not used yet (the replay guard is per uid, whatever the secret). */
  const codeOf = (uid: string, secret: string) => {
    const now = Math.floor(Date.now() / TOTP.periodMs);
    const step = Math.max((lastStep.get(uid) ?? now - 1) + 1, now);
    if (step > now + 1) throw new Error(`test bug: a third code of ${uid} within one step`);
    lastStep.set(uid, step);
    return currentCode(TOTP, secret, step * TOTP.periodMs);
  };
  const secretOf = (uid: string) => hl.env.secrets.get(uid) ?? "";
  const setSecret = (uid: string, ldif: string) =>
    hl.env.slapd.modify(`dn: uid=${uid},ou=people,${hl.env.slapd.suffix}\nchangetype: modify\n${ldif}`);

  beforeAll(async () => {
    const d = mkdtempSync(join(tmpdir(), "varco-remember-ldap-"));
    mkdirSync(join(d, "userkeys"), { recursive: true });
    await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(d, "ka")]);
    for (const u of LDAP_USERS) writeFileSync(join(d, `userkeys/${u}.pub`), readFileSync(join(d, "ka.pub")));
    hl = await startHarness({
      dir: d,
      extraUsers: LDAP_USERS,
      totpAttribute: "employeeNumber",
      templateEdit: (t) =>
        t.replace(
          "  chains: [[password, totp]]",
          '  chains: [[password, totp], [publickey, totp]]\n  totp: { remember: 8h, secrets: ldap, ldap_attribute: employeeNumber }\n  publickey: { keys_file: "userkeys/{uid}.pub" }',
        ),
    });
  }, 120_000);
  afterAll(async () => {
    await hl?.stop();
  });

  it("is honoured while the directory holds the same secret, in any spelling", async () => {
    expect((await keyLogin("rl01_vm1", "ka", codeOf("rl01", secretOf("rl01")), [], hl)).stdout).toBe("in");
    expect((await keyLogin("rl01_vm1", "ka", WRONG, [], hl)).asked).toEqual([]);
    // The same secret written in lower case with spaces gives the same codes: still remembered.
    const spelled = (
      secretOf("rl01")
        .toLowerCase()
        .match(/.{1,4}/g) ?? []
    ).join(" ");
    await setSecret("rl01", `replace: employeeNumber\nemployeeNumber: ${spelled}\n`);
    const again = await keyLogin("rl01_vm1", "ka", WRONG, [], hl);
    expect(again.stdout).toBe("in");
    expect(again.asked).toEqual([]);
  });

  it("a secret replaced in the directory voids the entry: the code of the new secret is asked, then remembered again", async () => {
    expect((await keyLogin("rl02_vm1", "ka", codeOf("rl02", secretOf("rl02")), [], hl)).stdout).toBe("in");
    expect((await keyLogin("rl02_vm1", "ka", WRONG, [], hl)).asked).toEqual([]);
    const fresh = newSecret();
    await setSecret("rl02", `replace: employeeNumber\nemployeeNumber: ${fresh}\n`);
    const refused = await keyLogin("rl02_vm1", "ka", WRONG, [], hl);
    expect(refused.exitCode).toBe(255);
    expect(refused.askedCode).toBe(true);
    // The old secret's codes are no good either; the new one's log in and are remembered.
    const full = await keyLogin("rl02_vm1", "ka", codeOf("rl02", fresh), [], hl);
    expect(full.stdout).toBe("in");
    expect(full.askedCode).toBe(true);
    const remembered = await keyLogin("rl02_vm1", "ka", WRONG, [], hl);
    expect(remembered.stdout).toBe("in");
    expect(remembered.asked).toEqual([]);
  });

  it("a secret removed from the directory voids the entry", async () => {
    expect((await keyLogin("rl03_vm1", "ka", codeOf("rl03", secretOf("rl03")), [], hl)).stdout).toBe("in");
    expect((await keyLogin("rl03_vm1", "ka", WRONG, [], hl)).asked).toEqual([]);
    await setSecret("rl03", "delete: employeeNumber\n");
    const r = await keyLogin("rl03_vm1", "ka", WRONG, [], hl);
    expect(r.exitCode).toBe(255);
    expect(r.stdout).toBe("");
  });
});
