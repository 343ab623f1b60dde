/**
 * The remembered second factor (`auth.totp.remember`) as pure decisions and inside the login
 * state machine, with fake factors over an in-memory entry table (no sshd, no slapd): which
 * network an address belongs to, which chains may skip the code, that the lockout comes first,
 * that a password-only chain never skips, and that only a login that checked the code stores.
 */
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ssh2 from "ssh2";
import { describe, expect, it } from "vitest";
import {
  type Account,
  chainRemembers,
  createLogin,
  DEFAULT_UID_PATTERN,
  directorySecretBinding,
  keyFingerprint,
  LOCAL_TOTP_BINDING,
  type LoginEvent,
  type LoginFactors,
  type LoginStep,
  REMEMBER_MAX_MS,
  rememberedValid,
  rememberNetwork,
} from "../../src/auth/index.ts";
import type { AuthMethod } from "../../src/policy/index.ts";
import { formatIssue, PolicyError, type PolicyIssue, parsePolicyText } from "../../src/policy/index.ts";
import type { RememberedRow } from "../../src/state/index.ts";

const H = 3600_000;
const T0 = Date.UTC(2026, 10, 28, 9, 0, 0);

describe("rememberNetwork: the source network an entry is bound to", () => {
  it("IPv4 /24, IPv4-mapped IPv6 in any spelling as IPv4, IPv6 /64, nothing for garbage", () => {
    expect(rememberNetwork("192.0.2.77")).toBe("192.0.2.0/24");
    expect(rememberNetwork("::ffff:192.0.2.77")).toBe("192.0.2.0/24");
    expect(rememberNetwork("::FFFF:c000:24d")).toBe("192.0.2.0/24");
    expect(rememberNetwork("127.0.0.1")).toBe("127.0.0.0/24");
    expect(rememberNetwork("127.0.1.1")).toBe("127.0.1.0/24");
    expect(rememberNetwork("192.0.3.77")).not.toBe(rememberNetwork("192.0.2.77"));
    expect(rememberNetwork("2001:db8:1:2:aaaa::1")).toBe("2001:db8:1:2::/64");
    expect(rememberNetwork("2001:DB8:1:2:bbbb::9")).toBe("2001:db8:1:2::/64");
    expect(rememberNetwork("2001:db8:1:3::1")).toBe("2001:db8:1:3::/64");
    for (const bad of ["", "not-an-ip", "192.0.2", "300.1.1.1", "192.0.2.1/24", "\u001b[31m1.2.3.4"])
      expect(rememberNetwork(bad)).toBeUndefined();
  });
});

describe("keyFingerprint", () => {
  it("is what ssh-keygen -l -E sha256 prints for the key", () => {
    const dir = mkdtempSync(join(tmpdir(), "varco-fp-"));
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "k")]);
    const parsed = ssh2.utils.parseKey(readFileSync(join(dir, "k.pub"), "utf8"));
    if (parsed instanceof Error) throw parsed;
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    const printed = execFileSync("ssh-keygen", ["-l", "-E", "sha256", "-f", join(dir, "k.pub")], { encoding: "utf8" }).split(/\s+/)[1];
    expect(keyFingerprint(key.getPublicSSH())).toBe(printed);
  });
});

describe("rememberedValid and chainRemembers", () => {
  const KEY = randomBytes(32);
  const bind = (secret: string | undefined, uid = "mario", key = KEY) => directorySecretBinding(key, uid, secret);
  const bound = bind("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP");
  const e: RememberedRow = {
    uid: "mario",
    keyFp: "SHA256:a",
    sourceNet: "192.0.2.0/24",
    createdAtMs: T0,
    expiresAtMs: T0 + 8 * H,
    totpBinding: bound ?? "",
  };
  const want = { uid: "mario", keyFp: "SHA256:a", sourceNet: "192.0.2.0/24", totpBinding: bound };
  it("valid until the expiry (exclusive), never when off, never beyond a period shortened since", () => {
    expect(rememberedValid(e, want, T0, 8 * H)).toBe(true);
    expect(rememberedValid(e, want, T0 + 8 * H - 1, 8 * H)).toBe(true);
    expect(rememberedValid(e, want, T0 + 8 * H, 8 * H)).toBe(false);
    expect(rememberedValid(e, want, T0 + 1, 0)).toBe(false);
    expect(rememberedValid(e, want, T0 + H, H)).toBe(false);
    expect(rememberedValid(e, want, T0 - 1, 8 * H)).toBe(false);
    expect(rememberedValid(undefined, want, T0, 8 * H)).toBe(false);
    // A forged row longer than the maximum is capped.
    expect(rememberedValid({ ...e, expiresAtMs: T0 + 30 * 24 * H }, want, T0 + REMEMBER_MAX_MS, 30 * 24 * H)).toBe(false);
  });
  it("every field must match", () => {
    expect(rememberedValid(e, { ...want, uid: "Mario" }, T0, 8 * H)).toBe(false);
    expect(rememberedValid(e, { ...want, keyFp: "SHA256:b" }, T0, 8 * H)).toBe(false);
    expect(rememberedValid(e, { ...want, sourceNet: "192.0.3.0/24" }, T0, 8 * H)).toBe(false);
  });
  it("is bound to the TOTP secret: another secret, no secret, an entry bound to nothing or to the local secret never match", () => {
    expect(rememberedValid(e, { ...want, totpBinding: bind("KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU") }, T0, 8 * H)).toBe(false);
    expect(rememberedValid(e, { ...want, totpBinding: bind(undefined) }, T0, 8 * H)).toBe(false);
    expect(rememberedValid(e, { ...want, totpBinding: bind(" = ") }, T0, 8 * H)).toBe(false);
    expect(bind("not base32 at all!")).toBeUndefined();
    expect(bind("JBSWY3DPEHPK3PXP")).toBeUndefined(); // 80 bits: shorter than TOTP accepts
    expect(rememberedValid(e, { ...want, totpBinding: "local" }, T0, 8 * H)).toBe(false);
    expect(rememberedValid({ ...e, totpBinding: "" }, { ...want, totpBinding: "" }, T0, 8 * H)).toBe(false);
    expect(rememberedValid({ ...e, totpBinding: "" }, { ...want, totpBinding: undefined }, T0, 8 * H)).toBe(false);
    // The same secret in another spelling is the same secret (the codes are the same).
    expect(rememberedValid(e, { ...want, totpBinding: bind("jbsw y3dp-ehpk 3pxp jbsw y3dp ehpk 3pxp====") }, T0, 8 * H)).toBe(true);
    // Keyed (totp.key): not a plain SHA-256 of the secret, another key or another uid with the same
    // secret gives an unrelated value (the state shows neither the secret nor who shares one).
    const plain = createHash("sha256").update("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").digest("hex");
    expect(bound).toMatch(/^ldap:[0-9a-f]{64}$/);
    expect(bound).not.toContain(plain);
    expect(bind("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "anna")).not.toBe(bound);
    expect(bind("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "mario", randomBytes(32))).not.toBe(bound);
    expect(LOCAL_TOTP_BINDING).toBe("local");
  });
  it("only chains holding publickey and totp", () => {
    expect(chainRemembers(["publickey", "totp"])).toBe(true);
    expect(chainRemembers(["publickey", "password", "totp"])).toBe(true);
    expect(chainRemembers(["password", "totp"])).toBe(false);
    expect(chainRemembers(["publickey"])).toBe(false);
  });
});

describe("auth.totp.remember in the policy", () => {
  const MINIMAL = `version: 1
gateway:
  listen: ["127.0.0.1:2222"]
directory:
  ldap:
    url: ldap://127.0.0.1:389
    bind_dn: cn=varco,dc=example,dc=org
    bind_password_file: secrets/ldap.pw
    user_base: ou=people,dc=example,dc=org
targets:
  vm1:
    host: 10.0.0.1
    host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz"
routes: []
`;
  const withRemember = (r: string) => `${MINIMAL}auth:\n  chains: [[publickey, totp]]\n  totp: { remember: ${r} }\n`;
  it("defaults to off, accepts up to 24h, refuses more with a message that says the maximum and why", () => {
    expect(parsePolicyText(MINIMAL, "/p/gateway.yaml").policy.auth.totp.remember).toBe(0);
    expect(parsePolicyText(withRemember("8h"), "/p/gateway.yaml").policy.auth.totp.remember).toBe(8 * H);
    expect(parsePolicyText(withRemember("24h"), "/p/gateway.yaml").policy.auth.totp.remember).toBe(24 * H);
    let err: unknown;
    try {
      parsePolicyText(withRemember("7d"), "/p/gateway.yaml");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PolicyError);
    expect(formatIssue((err as PolicyError).issues[0] as PolicyIssue)).toMatch(/auth\.totp\.remember.*at most 24h.*NIST SP 800-63B/);
  });
});

// ---- inside the login state machine (fake factors: an in-memory entry table stands in for the state) ----

const KEY_A = { algo: "ssh-ed25519", data: Buffer.from("key-a") };
const KEY_B = { algo: "ssh-ed25519", data: Buffer.from("key-b") };
const signed = (k: typeof KEY_A) => ({
  method: "publickey" as const,
  key: k,
  signed: { blob: Buffer.from("b"), signature: Buffer.from("s") },
});

function setup(o: { chains: AuthMethod[][]; source?: string; periodMs?: number; local?: boolean; rememberedFails?: boolean }) {
  const calls: string[] = [];
  const events: LoginEvent[] = [];
  const entries = new Map<string, RememberedRow>();
  const locked = new Set<string>();
  const periodMs = o.periodMs ?? 8 * H;
  let now = T0;
  const id = (uid: string, fp: string, net: string) => JSON.stringify([uid, fp, net]);
  const factors: LoginFactors<Account> = {
    lookup: async (typed) =>
      typed.toLowerCase() === "mario"
        ? { kind: "found", account: { uid: "mario", groups: [], local: o.local ?? false, active: true } }
        : { kind: "unknown" },
    password: async (_a, _t, pw) => (pw === "pw" ? "ok" : "invalid"),
    publickey: async (_a, key) => key.data.equals(KEY_A.data) || key.data.equals(KEY_B.data),
    hasTotp: () => true,
    async totp(_a, code, _n, consume) {
      calls.push(`totp${consume ? ":consume" : ""}`);
      return code === "123456" ? "ok" : "invalid";
    },
    enrolOnFirstLogin: false,
    invitationValid: () => false,
    enrolment: async () => ({ secret: "", uri: "", qr: "" }),
    confirmEnrolment: async () => undefined,
    locked: (key) => locked.has(key),
    failed: () => ({ lockedUid: false, lockedSource: false }),
    lockedAttempt: () => undefined,
    succeeded: () => undefined,
    async rememberedFactor(a, fp, net, at) {
      calls.push(`remembered:${fp}:${net}`);
      if (o.rememberedFails) throw new Error("state unreachable");
      const r = entries.get(id(a.uid, fp, net));
      return r && rememberedValid(r, { uid: a.uid, keyFp: fp, sourceNet: net, totpBinding: LOCAL_TOTP_BINDING }, at, periodMs)
        ? r
        : undefined;
    },
    async rememberFactor(a, fp, net, at) {
      calls.push(`remember:${fp}:${net}`);
      const r = { uid: a.uid, keyFp: fp, sourceNet: net, createdAtMs: at, expiresAtMs: at + periodMs, totpBinding: LOCAL_TOTP_BINDING };
      entries.set(id(a.uid, fp, net), r);
      return r;
    },
  };
  const newLogin = (source = o.source ?? "192.0.2.10") =>
    createLogin({
      factors,
      chains: o.chains,
      maxAttempts: 6,
      uidPattern: new RegExp(DEFAULT_UID_PATTERN, "u"),
      source,
      now: () => now,
      emit: (e) => events.push(e),
    });
  /** A key login of `name` (key, then a code round if asked, answered with `code`). */
  const keyLogin = async (
    name: string,
    key: typeof KEY_A,
    code: string,
    source?: string,
  ): Promise<{ step: LoginStep; prompts: string[] }> => {
    const l = newLogin(source);
    let step = await l.submit(name, signed(key));
    const prompts: string[] = [];
    if (step.kind === "continue" && step.partial) {
      const p = await l.submit(name, { method: "keyboard-interactive" });
      if (p.kind === "prompt") prompts.push(...p.prompts.map((x) => x.prompt));
      step = await l.submit(name, { method: "answers", answers: prompts.map((x) => (x.startsWith("Password") ? "pw" : code)) });
    }
    return { step, prompts };
  };
  const fp = (k: typeof KEY_A) => keyFingerprint(k.data);
  return { calls, events, entries, locked, newLogin, keyLogin, fp, advance: (ms: number) => (now += ms) };
}

describe("the login state machine with a remembered second factor", () => {
  it("[publickey, totp]: a full login stores; the same key and /24 then completes without the code, audited", async () => {
    const s = setup({ chains: [["publickey", "totp"]] });
    const full = await s.keyLogin("mario_vm1", KEY_A, "123456");
    expect(full.step.kind).toBe("accepted");
    expect(full.prompts).toEqual(["Verification code: "]);
    expect(s.calls).toContain(`remember:${s.fp(KEY_A)}:192.0.2.0/24`);
    s.calls.length = 0;
    s.events.length = 0;
    s.advance(H);
    const again = await s.keyLogin("MARIO_vm1", KEY_A, "wrong", "192.0.2.200");
    expect(again.step.kind).toBe("accepted");
    expect(again.prompts).toEqual([]);
    expect(s.calls.some((c) => c.startsWith("totp") || c.startsWith("remember:"))).toBe(false);
    const identity = again.step.kind === "accepted" ? again.step.identity : undefined;
    expect(identity?.factors).toEqual(["publickey", "totp"]);
    expect(identity?.remembered).toEqual(["totp"]);
    const used = s.events.find((e) => e.type === "mfa_remembered");
    expect(used).toMatchObject({
      uid: "mario",
      keyFingerprint: s.fp(KEY_A),
      sourceNet: "192.0.2.0/24",
      rememberedAt: T0,
      expiresAt: T0 + 8 * H,
    });
    expect(s.events.find((e) => e.type === "login")).toMatchObject({ factors: ["publickey"], remembered: ["totp"] });
  });

  it("another key, another /24, another IPv6 /64 and an expired entry all need the code", async () => {
    const s = setup({ chains: [["publickey", "totp"]] });
    await s.keyLogin("mario_x", KEY_A, "123456");
    expect((await s.keyLogin("mario_x", KEY_B, "wrong")).step.kind).toBe("continue");
    expect((await s.keyLogin("mario_x", KEY_A, "wrong", "192.0.3.10")).step.kind).toBe("continue");
    const v6 = setup({ chains: [["publickey", "totp"]], source: "2001:db8:1:2::10" });
    await v6.keyLogin("mario_x", KEY_A, "123456");
    expect((await v6.keyLogin("mario_x", KEY_A, "wrong", "2001:db8:1:2:ffff::1")).step.kind).toBe("accepted");
    expect((await v6.keyLogin("mario_x", KEY_A, "wrong", "2001:db8:1:3::10")).step.kind).toBe("continue");
    s.advance(8 * H);
    expect((await s.keyLogin("mario_x", KEY_A, "wrong")).step.kind).toBe("continue");
  });

  it("a locked uid is refused before any remembered entry is looked at", async () => {
    const s = setup({ chains: [["publickey", "totp"]] });
    await s.keyLogin("mario_x", KEY_A, "123456");
    s.locked.add("mario");
    s.calls.length = 0;
    const r = await s.keyLogin("mario_x", KEY_A, "wrong");
    expect(r.step.kind).toBe("continue");
    expect(s.calls.filter((c) => c.startsWith("remembered"))).toEqual([]);
  });

  it("a password chain never skips and never stores, even with an entry for the uid", async () => {
    const s = setup({
      chains: [
        ["password", "totp"],
        ["publickey", "totp"],
      ],
    });
    await s.keyLogin("mario_x", KEY_A, "123456");
    s.calls.length = 0;
    const l = s.newLogin();
    const p = await l.submit("mario_x", { method: "keyboard-interactive" });
    expect(p.kind === "prompt" && p.prompts.map((x) => x.prompt)).toEqual(["Password: ", "Verification code: "]);
    expect((await l.submit("mario_x", { method: "answers", answers: ["pw", "wrong"] })).kind).toBe("continue");
    expect((await l.submit("mario_x", { method: "password", password: "pw" })).kind).toBe("continue");
    expect(s.calls.filter((c) => c.startsWith("remember"))).toEqual([]);
    const ok = await l.submit("mario_x", { method: "keyboard-interactive" });
    expect(ok.kind).toBe("prompt");
  });

  it("a remembered code counts only in chains holding publickey: [password, totp] is not completed by a password", async () => {
    const s = setup({
      chains: [
        ["password", "totp"],
        ["publickey", "password", "totp"],
      ],
    });
    // The entry exists (stored by a full login through the key chain).
    await (async () => {
      const l = s.newLogin();
      await l.submit("mario_x", signed(KEY_A));
      await l.submit("mario_x", { method: "keyboard-interactive" });
      expect((await l.submit("mario_x", { method: "answers", answers: ["pw", "123456"] })).kind).toBe("accepted");
    })();
    expect(s.entries.size).toBe(1);
    // Without the key, the password chain asks the code.
    const noKey = s.newLogin();
    const p0 = await noKey.submit("mario_x", { method: "keyboard-interactive" });
    expect(p0.kind === "prompt" && p0.prompts.map((x) => x.prompt)).toEqual(["Password: ", "Verification code: "]);
    // With the key, only the password is asked, and the completed chain is the key chain.
    const l = s.newLogin();
    expect(await l.submit("mario_x", signed(KEY_A))).toMatchObject({ kind: "continue", partial: true });
    const p = await l.submit("mario_x", { method: "keyboard-interactive" });
    expect(p.kind === "prompt" && p.prompts.map((x) => x.prompt)).toEqual(["Password: "]);
    const done = await l.submit("mario_x", { method: "answers", answers: ["pw"] });
    expect(done.kind === "accepted" && done.identity.factors).toEqual(["publickey", "password", "totp"]);
  });

  it("a state that cannot be read asks for the code; break-glass users and unparsable sources are never remembered", async () => {
    const failing = setup({ chains: [["publickey", "totp"]], rememberedFails: true });
    expect((await failing.keyLogin("mario_x", KEY_A, "wrong")).step.kind).toBe("continue");
    const local = setup({ chains: [["publickey", "totp"]], local: true });
    await local.keyLogin("mario_x", KEY_A, "123456");
    expect(local.entries.size).toBe(0);
    expect(local.calls.filter((c) => c.startsWith("remember"))).toEqual([]);
    const odd = setup({ chains: [["publickey", "totp"]], source: "unix-socket" });
    await odd.keyLogin("mario_x", KEY_A, "123456");
    expect(odd.entries.size).toBe(0);
  });

  it("a remembered login does not extend the period", async () => {
    const s = setup({ chains: [["publickey", "totp"]] });
    await s.keyLogin("mario_x", KEY_A, "123456");
    s.advance(7 * H);
    expect((await s.keyLogin("mario_x", KEY_A, "wrong")).step.kind).toBe("accepted");
    s.advance(H);
    expect((await s.keyLogin("mario_x", KEY_A, "wrong")).step.kind).toBe("continue");
  });
});
