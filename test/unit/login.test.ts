/**
 * The login state machine without sshd or slapd: fake factors that record every call, so the
 * tests see exactly what was checked, in what order, and what the client would be told.
 */
import { describe, expect, it } from "vitest";
import {
  type Account,
  AuthenticatedIdentity,
  type Credential,
  createLogin,
  DEFAULT_UID_PATTERN,
  type LoginEvent,
  type LoginFactors,
  type LoginStep,
} from "../../src/auth/index.ts";
import type { AuthMethod } from "../../src/policy/index.ts";

interface FakeUser {
  readonly uid: string;
  readonly password: string;
  readonly code?: string;
  readonly key?: string;
  readonly active?: boolean;
  readonly invitation?: string;
}

function fakeFactors(users: FakeUser[], o: { enrol?: boolean } = {}) {
  const calls: string[] = [];
  const secrets = new Set(users.filter((u) => u.code).map((u) => u.uid));
  const failures = new Map<string, number>();
  const lockedKeys = new Set<string>();
  const find = (typed: string) => users.find((u) => u.uid === typed.trim().toLowerCase());
  const factors: LoginFactors<Account> = {
    async lookup(typed) {
      calls.push(`lookup:${typed}`);
      const u = find(typed);
      return u ? { kind: "found", account: { uid: u.uid, groups: ["g"], local: false, active: u.active ?? true } } : { kind: "unknown" };
    },
    async password(account, _typed, password) {
      calls.push(`password:${account?.uid ?? "?"}`);
      const u = account && users.find((x) => x.uid === account.uid);
      return u && u.password === password ? "ok" : "invalid";
    },
    async publickey(account, key, signed) {
      calls.push(`publickey:${account.uid}:${signed ? "signed" : "probe"}`);
      return users.find((x) => x.uid === account.uid)?.key === key.algo;
    },
    hasTotp: (a) => secrets.has(a.uid),
    async totp(account, code, _now, consume) {
      calls.push(`totp:${account?.uid ?? "?"}${consume ? ":consume" : ""}`);
      const u = account && users.find((x) => x.uid === account.uid);
      return u?.code !== undefined && u.code === code ? "ok" : "invalid";
    },
    enrolOnFirstLogin: o.enrol ?? false,
    invitationValid: (a, code) => users.find((x) => x.uid === a.uid)?.invitation === code,
    async enrolment() {
      return { secret: "S", uri: "otpauth://x", qr: "QR" };
    },
    async confirmEnrolment(a, _secret, code, invitation) {
      calls.push(`confirm:${a.uid}`);
      if (code !== "654321" || users.find((x) => x.uid === a.uid)?.invitation !== invitation) return undefined;
      secrets.add(a.uid);
      return ["r1", "r2"];
    },
    locked: (key) => lockedKeys.has(key),
    failed: (key) => {
      const n = (failures.get(key) ?? 0) + 1;
      failures.set(key, n);
      return { lockedUid: false, lockedSource: false };
    },
    lockedAttempt: (key) => {
      calls.push(`lockedAttempt:${key}`);
    },
    succeeded: (key) => {
      calls.push(`succeeded:${key}`);
    },
  };
  return { factors, calls, failures, lockedKeys };
}

const MARIO: FakeUser = { uid: "mario.rossi", password: "pw", code: "123456", key: "ssh-ed25519" };

function login(users: FakeUser[], o: { chains?: AuthMethod[][]; enrol?: boolean; maxAttempts?: number } = {}) {
  const f = fakeFactors(users, o);
  const events: LoginEvent[] = [];
  const l = createLogin({
    factors: f.factors,
    chains: o.chains ?? [["password", "totp"]],
    maxAttempts: o.maxAttempts ?? 6,
    uidPattern: new RegExp(DEFAULT_UID_PATTERN, "u"),
    source: "192.0.2.7",
    now: () => 1_700_000_000_000,
    emit: (e) => events.push(e),
  });
  const kbd = async (name: string, answers: string[] | undefined): Promise<LoginStep> => {
    const p = await l.submit(name, { method: "keyboard-interactive" });
    if (p.kind !== "prompt") return p;
    return l.submit(name, { method: "answers", answers });
  };
  const submit = (name: string, c: Credential) => l.submit(name, c);
  return { l, f, events, kbd, submit };
}

describe("login state machine", () => {
  it("asks password and code in one round and accepts with the directory's canonical uid", async () => {
    const t = login([MARIO]);
    const step = await t.kbd("Mario.Rossi_vm1", ["pw", "123456"]);
    expect(step.kind).toBe("accepted");
    if (step.kind !== "accepted") return;
    expect(step.identity.uid).toBe("mario.rossi");
    expect(step.alias).toBe("vm1");
    expect(step.account).toBe("Mario.Rossi_vm1");
    expect(t.events.find((e) => e.type === "login")).toMatchObject({ uid: "mario.rossi" });
    expect(t.f.calls).toContain("succeeded:mario.rossi");
  });

  it("evaluates the code even when the password is wrong, and refuses without telling which", async () => {
    const t = login([MARIO]);
    const step = await t.kbd("mario.rossi_vm1", ["wrong", "123456"]);
    expect(step).toEqual({ kind: "continue", methods: ["keyboard-interactive", "password"], partial: false });
    expect(t.f.calls).toEqual(["lookup:mario.rossi", "password:mario.rossi", "totp:mario.rossi"]);
    expect(t.events).toEqual([{ type: "login_refused", uid: "mario.rossi", account: "mario.rossi_vm1", reason: "bad_password" }]);
  });

  it("an unknown user goes through the same checks as a known one", async () => {
    const known = login([MARIO]);
    await known.kbd("mario.rossi_vm1", ["wrong", "000000"]);
    const unknown = login([MARIO]);
    await unknown.kbd("nobody_vm1", ["wrong", "000000"]);
    expect(unknown.f.calls.map((c) => c.split(":")[0])).toEqual(known.f.calls.map((c) => c.split(":")[0]));
  });

  it("hides a wrong password sent with the password method: partial success, refused after the code", async () => {
    const t = login([MARIO]);
    const first = await t.submit("mario.rossi_vm1", { method: "password", password: "wrong" });
    const right = login([MARIO]);
    const firstRight = await right.submit("mario.rossi_vm1", { method: "password", password: "pw" });
    // The client cannot tell a right password from a wrong one.
    expect(first).toEqual(firstRight);
    expect(first).toEqual({ kind: "continue", methods: ["keyboard-interactive"], partial: true });
    const code = await t.kbd("mario.rossi_vm1", ["123456"]);
    expect(code.kind).toBe("continue");
    expect(t.events.at(-1)).toMatchObject({ type: "login_refused", reason: "bad_password" });
    expect(t.events.some((e) => e.type === "login")).toBe(false);
  });

  it("a hidden wrong password is always counted, whatever the client sends next", async () => {
    const t = login([MARIO]);
    for (let i = 0; i < 3; i++) {
      await t.submit("mario.rossi_vm1", { method: "password", password: `guess${i}` });
      // A second password request (not wanted any more), a change request, or another user name.
      await t.submit("mario.rossi_vm1", { method: "password", password: "x" });
    }
    expect(t.f.failures.get("mario.rossi")).toBe(3);
    await t.submit("mario.rossi_vm1", { method: "password", password: "guess" });
    await t.submit("mario.rossi_vm1", { method: "password", password: "pw", newPassword: "n" });
    expect(t.f.failures.get("mario.rossi")).toBe(4);
    await t.submit("mario.rossi_vm1", { method: "password", password: "guess" });
    await t.submit("anna_vm1", { method: "none" });
    expect(t.f.failures.get("mario.rossi")).toBe(5);
    expect(t.events.filter((e) => e.type === "login_refused").every((e) => e.type === "login_refused" && e.reason === "bad_password")).toBe(
      true,
    );
  });

  it("counts a hidden failure when the client disconnects before the code", async () => {
    const t = login([MARIO]);
    await t.submit("mario.rossi_vm1", { method: "password", password: "wrong" });
    t.l.abandon();
    expect(t.f.failures.get("mario.rossi")).toBe(1);
  });

  it("checks the name before any lookup: whitespace, controls, non-NFC, over 256 bytes", async () => {
    for (const name of [
      " mario.rossi_vm1",
      "mario.rossi _vm1",
      "mario.rossi_vm1 ",
      "mario\u0000_vm1",
      "e\u0301_vm1",
      "a".repeat(300),
      "mario.rossi_",
      "*_vm1",
      "(uid=*)_vm1",
    ]) {
      const t = login([MARIO]);
      const step = await t.kbd(name, ["pw", "123456"]);
      expect(step.kind, JSON.stringify(name)).toBe("continue");
      expect(t.f.calls, JSON.stringify(name)).toEqual([]);
      const refused = t.events[0];
      expect(refused?.type).toBe("login_refused");
      if (refused?.type === "login_refused") expect(Buffer.byteLength(refused.account)).toBeLessThanOrEqual(256);
    }
  });

  it("an aborted keyboard-interactive round is not an empty password and never logs in", async () => {
    const t = login([MARIO]);
    await t.submit("mario.rossi_vm1", { method: "keyboard-interactive" });
    const step = await t.submit("mario.rossi_vm1", { method: "answers", answers: undefined });
    expect(step).toEqual({ kind: "ignore" });
    expect(t.f.calls).toEqual([]);
    expect(t.events).toEqual([]);
    // Answers without a round in progress are ignored too.
    expect(await t.submit("mario.rossi_vm1", { method: "answers", answers: ["pw", "123456"] })).toEqual({ kind: "ignore" });
  });

  it("an aborted recovery-code screen after enrolment does not log in", async () => {
    const t = login([{ uid: "new.user", password: "pw", invitation: "inv-1" }], { enrol: true });
    const qr = await t.kbd("new.user_vm1", ["pw", "inv-1"]);
    expect(qr.kind).toBe("prompt");
    const codes = await t.submit("new.user_vm1", { method: "answers", answers: ["654321"] });
    expect(codes.kind).toBe("prompt");
    const aborted = await t.submit("new.user_vm1", { method: "answers", answers: undefined });
    expect(aborted).toEqual({ kind: "ignore" });
    expect(t.events.some((e) => e.type === "login")).toBe(false);
  });

  it("enrolment needs the invitation: the password alone is refused", async () => {
    const t = login([{ uid: "new.user", password: "pw", invitation: "inv-1" }], { enrol: true });
    const step = await t.kbd("new.user_vm1", ["pw", ""]);
    expect(step.kind).toBe("continue");
    expect(t.events[0]).toMatchObject({ type: "login_refused", reason: "no_enrolment_invitation" });
    const wrongPw = await t.kbd("new.user_vm1", ["bad", "inv-1"]);
    expect(wrongPw.kind).toBe("continue");
    const ok = await t.kbd("new.user_vm1", ["pw", "inv-1"]);
    expect(ok.kind).toBe("prompt");
    const done = await t.submit("new.user_vm1", { method: "answers", answers: ["654321"] });
    expect(done.kind).toBe("prompt");
    const accepted = await t.submit("new.user_vm1", { method: "answers", answers: [""] });
    expect(accepted.kind).toBe("accepted");
  });

  it("public-key probes count as attempts; the connection ends after max_auth_attempts", async () => {
    const t = login([MARIO], { chains: [["publickey", "totp"]], maxAttempts: 3 });
    const key = { algo: "ssh-rsa", data: Buffer.from("k") };
    const a = await t.submit("mario.rossi_vm1", { method: "publickey", key });
    const b = await t.submit("mario.rossi_vm1", { method: "publickey", key });
    const c = await t.submit("mario.rossi_vm1", { method: "publickey", key });
    expect([a.kind, b.kind, c.kind]).toEqual(["continue", "continue", "disconnect"]);
    // One directory lookup for the whole connection.
    expect(t.f.calls.filter((x) => x.startsWith("lookup"))).toEqual(["lookup:mario.rossi"]);
  });

  it("a key for an inactive account is refused", async () => {
    const t = login([{ ...MARIO, active: false }], { chains: [["publickey", "totp"]] });
    const key = { algo: "ssh-ed25519", data: Buffer.from("k") };
    expect((await t.submit("mario.rossi_vm1", { method: "publickey", key })).kind).toBe("continue");
    const signed = await t.submit("mario.rossi_vm1", {
      method: "publickey",
      key,
      signed: { blob: Buffer.from("b"), signature: Buffer.from("s") },
    });
    expect(signed.kind).toBe("continue");
    expect(t.events.at(-1)).toMatchObject({ type: "login_refused", reason: "account_inactive" });
  });

  it("key then code: partial success after the key, accepted after the code", async () => {
    const t = login([MARIO], { chains: [["publickey", "totp"]] });
    const key = { algo: "ssh-ed25519", data: Buffer.from("k") };
    expect(await t.submit("mario.rossi_vm1", { method: "publickey", key })).toEqual({ kind: "pk_ok" });
    const s = await t.submit("mario.rossi_vm1", {
      method: "publickey",
      key,
      signed: { blob: Buffer.from("b"), signature: Buffer.from("s") },
    });
    expect(s).toEqual({ kind: "continue", methods: ["keyboard-interactive"], partial: true });
    expect((await t.kbd("mario.rossi_vm1", ["123456"])).kind).toBe("accepted");
  });

  it("while locked: no factor is checked, no refusal row, a counter instead", async () => {
    const t = login([MARIO]);
    t.f.lockedKeys.add("mario.rossi");
    const step = await t.kbd("MARIO.ROSSI_vm1", ["pw", "123456"]);
    expect(step.kind).toBe("continue");
    expect(t.f.calls).toEqual(["lookup:MARIO.ROSSI", "lockedAttempt:mario.rossi"]);
    expect(t.events.map((e) => e.type)).toEqual(["locked_attempt"]);
  });

  it("a password change request is refused without a directory call", async () => {
    const t = login([MARIO]);
    const step = await t.submit("mario.rossi_vm1", { method: "password", password: "pw", newPassword: "new" });
    expect(step.kind).toBe("continue");
    expect(t.f.calls).toEqual([]);
    expect(t.events[0]).toMatchObject({ reason: "password_change_refused" });
  });

  it("a different user name on the same connection starts over", async () => {
    const t = login([MARIO, { uid: "anna", password: "apw", code: "111111" }], { chains: [["password", "totp"]] });
    await t.submit("mario.rossi_vm1", { method: "password", password: "pw" });
    const step = await t.kbd("anna_vm2", ["111111"]);
    // anna's round asks for both factors again: mario's password counts for nothing.
    expect(step.kind).toBe("continue");
    expect(t.events.some((e) => e.type === "login")).toBe(false);
  });

  it("only a completed login makes an AuthenticatedIdentity", () => {
    const Ctor = AuthenticatedIdentity as unknown as new (...a: unknown[]) => AuthenticatedIdentity;
    expect(() => new Ctor(Symbol("varco.login.mint"), "root", [], ["password"], false)).toThrow(TypeError);
  });
});
