import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ssh2 from "ssh2";
import { afterEach, describe, expect, it } from "vitest";
import { currentCode, fillFilter, newSecret, normaliseSecret, openTotpStore, otpauthUri, TotpSecretError } from "../../src/auth/index.ts";
import { generateEd25519 } from "../../src/ssh/index.ts";

const settings = { issuer: "varco", digits: 6 as const, periodMs: 30_000, window: 1 };
const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), "varco-unit-"));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe("LDAP filter escaping (RFC 4515 §3)", () => {
  it("escapes the characters that change a filter's meaning", () => {
    expect(fillFilter("(uid={uid})", { uid: "mario.rossi" })).toBe("(uid=mario.rossi)");
    expect(fillFilter("(uid={uid})", { uid: "*" })).toBe("(uid=\\2a)");
    expect(fillFilter("(uid={uid})", { uid: "a)(uid=*" })).toBe("(uid=a\\29\\28uid=\\2a)");
    expect(fillFilter("(uid={uid})", { uid: "back\\slash" })).toBe("(uid=back\\5cslash)");
    expect(fillFilter("(uid={uid})", { uid: "nul\u0000" })).toBe("(uid=nul\\00)");
    expect(fillFilter("(&(a={uid})(b={dn}))", { uid: "x", dn: "cn=y,dc=z" })).toBe("(&(a=x)(b=cn=y,dc=z))");
  });
});

describe("TOTP store", () => {
  const T0 = Date.UTC(2026, 10, 27, 12, 0, 0);

  it("accepts a current code once, never twice in the same step, and the next step's code", async () => {
    const store = openTotpStore(tmp(), settings);
    const secret = newSecret();
    await store.setSecret("mario.rossi", secret);
    const code = currentCode(settings, secret, T0);
    expect(await store.verifyCode("mario.rossi", code, T0)).toBe(true);
    expect(await store.verifyCode("mario.rossi", code, T0 + 1000)).toBe(false);
    const next = currentCode(settings, secret, T0 + 30_000);
    expect(await store.verifyCode("mario.rossi", next, T0 + 1000)).toBe(true);
    // An older step than the last used one is refused even inside the window.
    const prev = currentCode(settings, secret, T0 - 30_000);
    expect(await store.verifyCode("mario.rossi", prev, T0)).toBe(false);
    store.close();
  });

  it("honours the window: ±1 step accepted, ±2 refused", async () => {
    const store = openTotpStore(tmp(), settings);
    // Two different steps can share a 6-digit code (about 1 in 300 000 here): pick a secret whose
    // codes for steps -2..+2 are all different, so the test cannot fail by coincidence.
    let secret = newSecret();
    for (let i = 0; i < 10; i++) {
      const codes = [-2, -1, 0, 1, 2].map((k) => currentCode(settings, secret, T0 + k * 30_000));
      if (new Set(codes).size === codes.length) break;
      secret = newSecret();
    }
    await store.setSecret("u", secret);
    expect(await store.verifyCode("u", currentCode(settings, secret, T0 - 60_000), T0)).toBe(false);
    expect(await store.verifyCode("u", currentCode(settings, secret, T0 + 60_000), T0)).toBe(false);
    expect(await store.verifyCode("u", currentCode(settings, secret, T0 - 30_000), T0)).toBe(true);
    store.close();
  });

  it("refuses malformed codes and users without a secret", async () => {
    const store = openTotpStore(tmp(), settings);
    await store.setSecret("u", newSecret());
    expect(await store.verifyCode("u", "", T0)).toBe(false);
    expect(await store.verifyCode("u", "12345a", T0)).toBe(false);
    expect(await store.verifyCode("u", "1234567", T0)).toBe(false);
    expect(await store.verifyCode("nobody", "123456", T0)).toBe(false);
    store.close();
  });

  it("keeps secrets encrypted at rest under a 0600 key file", async () => {
    const dir = tmp();
    const store = openTotpStore(dir, settings);
    const secret = newSecret();
    await store.setSecret("u", secret);
    store.close();
    expect(statSync(join(dir, "totp.key")).mode & 0o777).toBe(0o600);
    const raw = Buffer.concat([readFileSync(join(dir, "state.db")), readFileSync(join(dir, "state.db-wal"), { flag: "a+" })]);
    expect(raw.includes(Buffer.from(secret))).toBe(false);
  });

  it("validates imported secrets and builds the otpauth URI", () => {
    expect(() => normaliseSecret("JBSWY3DPEHPK3PXP")).toThrow(TotpSecretError);
    expect(() => normaliseSecret("not base32!")).toThrow(TotpSecretError);
    expect(normaliseSecret("jbsw y3dp ehpk 3pxp jbsw y3dp ehpk 3pxp")).toBe("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP");
    const uri = otpauthUri(settings, "mario.rossi", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP");
    expect(uri).toMatch(/^otpauth:\/\/totp\/varco:mario\.rossi\?/);
    expect(uri).toContain("secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP");
    expect(uri).toContain("issuer=varco");
  });
});

describe("generated keys", () => {
  it("every generated ed25519 pair parses back (ssh2 drops a leading zero byte in 1 of 256, ssh2#1513)", () => {
    for (let i = 0; i < 2000; i++) {
      const pair = generateEd25519("t");
      expect(ssh2.utils.parseKey(pair.private)).not.toBeInstanceOf(Error);
      expect(ssh2.utils.parseKey(pair.public)).not.toBeInstanceOf(Error);
    }
  });
});
