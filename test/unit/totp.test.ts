/**
 * The TOTP store's one-time codes: enrolment invitations and recovery codes, against a real
 * SQLite state.db in a temp dir (several handles and several processes on the same file).
 */
import { createHash, createHmac, hkdfSync } from "node:crypto";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { execa } from "execa";
import { afterEach, describe, expect, it } from "vitest";
import {
  currentCode,
  newOneTimeCode,
  newRecoveryCodes,
  newSecret,
  normaliseOneTimeCode,
  openTotpStore,
  TotpSecretError,
} from "../../src/auth/index.ts";

const settings = { issuer: "varco", digits: 6 as const, periodMs: 30_000, window: 1 };
const T0 = Date.UTC(2026, 10, 27, 12, 0, 0);
const HOUR = 3_600_000;
const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";
const FORMAT = /^[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}$/;

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), "varco-totp-"));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** state.db with its WAL, as bytes an attacker who copies the volume would see. */
const rawDb = (dir: string) =>
  Buffer.concat([
    readFileSync(join(dir, "state.db")),
    existsSync(join(dir, "state.db-wal")) ? readFileSync(join(dir, "state.db-wal")) : Buffer.alloc(0),
  ]);
const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

/** Pearson's χ² of symbol counts against the uniform distribution. */
function chiSquare(counts: Map<string, number>, bins: number, total: number): number {
  const expected = total / bins;
  let chi = 0;
  for (const c of ALPHABET) chi += ((counts.get(c) ?? 0) - expected) ** 2 / expected;
  return chi;
}

describe("one-time code format", () => {
  it("is 16 Crockford base32 symbols in four groups: 80 bits, no look-alikes", async () => {
    expect(ALPHABET).toHaveLength(32);
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const c = newOneTimeCode();
      expect(c).toMatch(FORMAT);
      expect(c).not.toMatch(/[ilou]/);
      seen.add(c);
    }
    expect(seen.size).toBe(2000);
    // 16 symbols × log2(32) bits.
    expect(16 * Math.log2(ALPHABET.length)).toBeGreaterThanOrEqual(80);
  });

  it("draws every symbol uniformly at every position (no modulo bias)", async () => {
    const n = 20_000;
    const all = new Map<string, number>();
    const perPosition = Array.from({ length: 16 }, () => new Set<string>());
    for (let i = 0; i < n; i++) {
      const s = newOneTimeCode().replaceAll("-", "");
      for (let p = 0; p < 16; p++) {
        const ch = s[p] as string;
        all.set(ch, (all.get(ch) ?? 0) + 1);
        perPosition[p]?.add(ch);
      }
    }
    expect(all.size).toBe(32);
    for (const p of perPosition) expect(p.size).toBe(32);
    // χ² with 31 degrees of freedom: P(χ² > 90) < 1e-7 for a uniform source; the old
    // `byte % 31` sampler (9/256 vs 8/256) scores in the thousands at this sample size.
    expect(chiSquare(all, 32, n * 16)).toBeLessThan(90);
  });

  it("newRecoveryCodes gives ten distinct codes of the same format", async () => {
    const codes = newRecoveryCodes();
    expect(codes).toHaveLength(10);
    expect(new Set(codes).size).toBe(10);
    for (const c of codes) expect(c).toMatch(FORMAT);
  });

  it("normalises case, spaces, dashes and Crockford look-alikes, and nothing else", async () => {
    expect(normaliseOneTimeCode("abcd-efgh-jkmn-pqrs")).toBe("abcdefghjkmnpqrs");
    expect(normaliseOneTimeCode(" ABCD EFGH\tJKMN-PQRS\n")).toBe("abcdefghjkmnpqrs");
    expect(normaliseOneTimeCode("abcdefghjkmnpqrs")).toBe("abcdefghjkmnpqrs");
    expect(normaliseOneTimeCode("a-b-c-d-efghjkmnpqrs")).toBe("abcdefghjkmnpqrs");
    expect(normaliseOneTimeCode("IlO0-1111-0000-aaaa")).toBe("110011110000aaaa");
    // Wrong length, the old 8-character format, symbols outside the alphabet, other separators.
    for (const bad of [
      "",
      "abcd-efgh",
      "abcd-efgh-jkmn-pqr",
      "abcd-efgh-jkmn-pqrst",
      "abcd-efgh-jkmn-pqru",
      "abcd_efgh_jkmn_pqrs",
      "abcd.efgh.jkmn.pqrs",
      "abcd-efgh-jkmn-pqrs;",
      "abcd-efgh-jkmn-pqrs; true",
      "abcd-efgh-jkmn-pqrs\u0000",
      "abcd-efgh-jkmn-pqr\u0455", // Cyrillic ѕ
      "ａbcd-efgh-jkmn-pqrs", // full-width a
      `${"a".repeat(16)}${" ".repeat(200)}`,
    ])
      expect(normaliseOneTimeCode(bad), JSON.stringify(bad)).toBeUndefined();
  });
});

describe("enrolment invitations", () => {
  it("accepts the code once, in any typed spelling, and never again", async () => {
    const store = openTotpStore(tmp(), settings);
    const code = await store.invite("mario.rossi", 24 * HOUR, T0);
    expect(code).toMatch(FORMAT);
    expect(await store.hasInvitation("mario.rossi", T0 + 1)).toBe(true);
    expect(await store.consumeInvitation("mario.rossi", ` ${code.toUpperCase().replaceAll("-", " ")} `, T0 + 1000)).toBe(true);
    expect(await store.hasInvitation("mario.rossi", T0 + 1000)).toBe(false);
    expect(await store.consumeInvitation("mario.rossi", code, T0 + 2000)).toBe(false);
    store.close();
  });

  it("a wrong code does not use the invitation up, and is refused", async () => {
    const store = openTotpStore(tmp(), settings);
    const code = await store.invite("u", HOUR, T0);
    const other = newOneTimeCode();
    expect(await store.consumeInvitation("u", other, T0)).toBe(false);
    expect(await store.consumeInvitation("u", "", T0)).toBe(false);
    expect(await store.consumeInvitation("u", "123456", T0)).toBe(false);
    // The right code with one symbol changed.
    const flipped = code.slice(0, -1) + (code.endsWith("0") ? "1" : "0");
    expect(await store.consumeInvitation("u", flipped, T0)).toBe(false);
    expect(await store.consumeInvitation("u", code, T0)).toBe(true);
    store.close();
  });

  it("expires: valid until just before nowMs + validMs, refused at and after it", async () => {
    const store = openTotpStore(tmp(), settings);
    const code = await store.invite("u", HOUR, T0);
    expect(await store.hasInvitation("u", T0 + HOUR - 1)).toBe(true);
    expect(await store.hasInvitation("u", T0 + HOUR)).toBe(false);
    expect(await store.consumeInvitation("u", code, T0 + HOUR)).toBe(false);
    expect(await store.consumeInvitation("u", code, T0 + 10 * HOUR)).toBe(false);
    const again = await store.invite("u", HOUR, T0);
    expect(await store.consumeInvitation("u", again, T0 + HOUR - 1)).toBe(true);
    await expect(store.invite("u", 0, T0)).rejects.toThrow(RangeError);
    await expect(store.invite("u", -1, T0)).rejects.toThrow(RangeError);
    await expect(store.invite("u", Number.NaN, T0)).rejects.toThrow(RangeError);
    await expect(store.invite("u", Number.POSITIVE_INFINITY, T0)).rejects.toThrow(RangeError);
    store.close();
  });

  it("a new invitation replaces the previous one", async () => {
    const store = openTotpStore(tmp(), settings);
    const first = await store.invite("u", HOUR, T0);
    const second = await store.invite("u", HOUR, T0 + 1000);
    expect(second).not.toBe(first);
    expect(await store.consumeInvitation("u", first, T0 + 2000)).toBe(false);
    expect(await store.consumeInvitation("u", second, T0 + 2000)).toBe(true);
    // Replacement also shortens: a later, shorter invitation's expiry wins.
    await store.invite("u", 10 * HOUR, T0);
    const short = await store.invite("u", 1000, T0);
    expect(await store.hasInvitation("u", T0 + 1000)).toBe(false);
    expect(await store.consumeInvitation("u", short, T0 + 1000)).toBe(false);
    store.close();
  });

  it("is bound to its uid: another user's code is refused, and leaves both invitations alone", async () => {
    const store = openTotpStore(tmp(), settings);
    const alice = await store.invite("alice", HOUR, T0);
    const bob = await store.invite("bob", HOUR, T0);
    expect(await store.consumeInvitation("bob", alice, T0)).toBe(false);
    expect(await store.consumeInvitation("carol", alice, T0)).toBe(false);
    expect(await store.consumeInvitation("Alice", alice, T0)).toBe(false);
    expect(await store.consumeInvitation("alice ", alice, T0)).toBe(false);
    expect(await store.consumeInvitation("alice", alice, T0)).toBe(true);
    expect(await store.consumeInvitation("bob", bob, T0)).toBe(true);
    store.close();
  });

  it("reset forgets the invitation with the secret and recovery codes; a reset user needs a new invitation", async () => {
    const store = openTotpStore(tmp(), settings);
    // An invitation alone (nothing enrolled yet): reset still clears it.
    const code = await store.invite("u", HOUR, T0);
    expect(await store.reset("u")).toBe(false);
    expect(await store.hasInvitation("u", T0)).toBe(false);
    expect(await store.consumeInvitation("u", code, T0)).toBe(false);
    // Enrolled user with recovery codes.
    const secret = newSecret();
    await store.setSecret("u", secret);
    const recovery = newRecoveryCodes();
    await store.setRecoveryCodes("u", recovery);
    expect(await store.reset("u")).toBe(true);
    expect(await store.hasSecret("u")).toBe(false);
    expect(await store.recoveryCodesLeft("u")).toBe(0);
    expect(await store.useRecoveryCode("u", recovery[0] as string)).toBe(false);
    expect(await store.verifyCode("u", currentCode(settings, secret, T0), T0)).toBe(false);
    store.close();
  });

  it("an enrolled user cannot use an invitation: setSecret drops it, and consume refuses while a secret exists", async () => {
    const store = openTotpStore(tmp(), settings);
    const code = await store.invite("u", HOUR, T0);
    await store.setSecret("u", newSecret());
    expect(await store.hasInvitation("u", T0)).toBe(false);
    expect(await store.consumeInvitation("u", code, T0)).toBe(false);
    // The store does not refuse to invite an enrolled uid (the CLI does), but the code is useless.
    const late = await store.invite("u", HOUR, T0);
    expect(await store.consumeInvitation("u", late, T0)).toBe(false);
    store.close();
  });

  it("keeps neither the code nor an unkeyed hash of it in state.db", async () => {
    const dir = tmp();
    const store = openTotpStore(dir, settings);
    const code = await store.invite("mario.rossi", HOUR, T0);
    store.close();
    const raw = rawDb(dir);
    const bare = code.replaceAll("-", "");
    for (const needle of [code, bare, code.toUpperCase(), sha256(code), sha256(bare), sha256(`mario.rossi\0${bare}`)])
      expect(raw.includes(Buffer.from(needle)), needle).toBe(false);
  });

  it("a copy of state.db under another totp.key matches no code (the hash is keyed)", async () => {
    const dir = tmp();
    const store = openTotpStore(dir, settings);
    const code = await store.invite("u", HOUR, T0);
    const recovery = newRecoveryCodes(1)[0] as string;
    await store.setRecoveryCodes("u", [recovery]);
    store.close();
    const other = tmp();
    copyFileSync(join(dir, "state.db"), join(other, "state.db"));
    if (existsSync(join(dir, "state.db-wal"))) copyFileSync(join(dir, "state.db-wal"), join(other, "state.db-wal"));
    const stolen = openTotpStore(other, settings); // creates a fresh totp.key
    expect(await stolen.hasInvitation("u", T0)).toBe(true);
    expect(await stolen.consumeInvitation("u", code, T0)).toBe(false);
    expect(await stolen.useRecoveryCode("u", recovery)).toBe(false);
    stolen.close();
  });

  it("two store handles on one state.db: only one consume wins", async () => {
    const dir = tmp();
    const a = openTotpStore(dir, settings);
    const b = openTotpStore(dir, settings);
    const code = await a.invite("u", HOUR, T0);
    expect(await b.hasInvitation("u", T0)).toBe(true);
    const results = [
      await b.consumeInvitation("u", code, T0),
      await a.consumeInvitation("u", code, T0),
      await b.consumeInvitation("u", code, T0),
    ];
    expect(results).toEqual([true, false, false]);
    a.close();
    b.close();
  });

  it("four processes racing with the same code: exactly one wins", async () => {
    const dir = tmp();
    const store = openTotpStore(dir, settings);
    const code = await store.invite("u", HOUR, T0);
    store.close();
    const totpTs = fileURLToPath(new URL("../../src/auth/totp.ts", import.meta.url));
    const script = join(dir, "race.mjs");
    // Each process opens its own handle, reports ready, then consumes when stdin says go.
    writeFileSync(
      script,
      `const { openTotpStore } = await import(${JSON.stringify(totpTs)});
const store = openTotpStore(${JSON.stringify(dir)}, ${JSON.stringify(settings)});
process.stdout.write("ready\\n");
process.stdin.once("data", async () => {
  const won = await store.consumeInvitation("u", ${JSON.stringify(code)}, ${T0});
  store.close();
  process.stdout.write(won ? "won\\n" : "lost\\n");
  process.exit(0);
});
`,
    );
    const root = fileURLToPath(new URL("../../", import.meta.url));
    const procs = Array.from({ length: 4 }, () =>
      execa("node", ["--import", "tsx", script], { cwd: root, timeout: 60_000, reject: false }),
    );
    await Promise.all(
      procs.map(
        (p) =>
          new Promise<void>((resolve, reject) => {
            p.stdout?.on("data", (d: Buffer) => {
              if (d.toString().includes("ready")) resolve();
            });
            p.on("exit", () => reject(new Error(`a racer exited before it was ready: ${p.stderr?.read()?.toString() ?? ""}`)));
          }),
      ),
    );
    for (const p of procs) p.stdin?.write("go\n");
    const outs = await Promise.all(procs);
    const lines = outs.map((o) => o.stdout.replace("ready\n", "").trim());
    expect(lines.filter((l) => l === "won")).toHaveLength(1);
    expect(lines.filter((l) => l === "lost")).toHaveLength(3);
  }, 90_000);

  it("adds its table to an existing state.db without touching what is there", async () => {
    const dir = tmp();
    // A state.db as earlier versions left it (no totp_invitations table), with a secret in it.
    const first = openTotpStore(dir, settings);
    const secret = newSecret();
    await first.setSecret("u", secret);
    first.close();
    const db = new Database(join(dir, "state.db"));
    db.exec("DROP TABLE totp_invitations");
    db.close();
    const store = openTotpStore(dir, settings);
    expect(await store.verifyCode("u", currentCode(settings, secret, T0), T0)).toBe(true);
    const code = await store.invite("v", HOUR, T0);
    expect(await store.consumeInvitation("v", code, T0)).toBe(true);
    store.close();
  });
});

describe("recovery codes", () => {
  it("each code works once, typed in any case or spacing, for its own uid only", async () => {
    const store = openTotpStore(tmp(), settings);
    const codes = newRecoveryCodes();
    await store.setRecoveryCodes("u", codes);
    await store.setRecoveryCodes("w", newRecoveryCodes());
    expect(await store.recoveryCodesLeft("u")).toBe(10);
    const [c0, c1] = codes as [string, string];
    expect(await store.useRecoveryCode("w", c0)).toBe(false);
    expect(await store.useRecoveryCode("u", c0.toUpperCase().replaceAll("-", " "))).toBe(true);
    expect(await store.useRecoveryCode("u", c0)).toBe(false);
    expect(await store.recoveryCodesLeft("u")).toBe(9);
    expect(await store.useRecoveryCode("u", c1.replaceAll("-", ""))).toBe(true);
    expect(await store.recoveryCodesLeft("u")).toBe(8);
    expect(await store.recoveryCodesLeft("w")).toBe(10);
    // New codes replace the old ones.
    await store.setRecoveryCodes("u", newRecoveryCodes(2));
    expect(await store.useRecoveryCode("u", codes[2] as string)).toBe(false);
    expect(await store.recoveryCodesLeft("u")).toBe(2);
    store.close();
  });

  it("refuses to store codes that are not in the 80-bit format", async () => {
    const store = openTotpStore(tmp(), settings);
    await expect(store.setRecoveryCodes("u", ["abcd-efgh"])).rejects.toThrow(TotpSecretError);
    await expect(store.setRecoveryCodes("u", ["password"])).rejects.toThrow(TotpSecretError);
    store.close();
  });

  it("stores HMAC-SHA256 under a key derived from totp.key, never the code or its SHA-256", async () => {
    const dir = tmp();
    const store = openTotpStore(dir, settings);
    const codes = newRecoveryCodes();
    await store.setRecoveryCodes("mario.rossi", codes);
    store.close();
    const raw = rawDb(dir);
    for (const c of codes) {
      const bare = c.replaceAll("-", "");
      for (const needle of [c, bare, sha256(c), sha256(bare), sha256(`mario.rossi\0${bare}`)])
        expect(raw.includes(Buffer.from(needle)), needle).toBe(false);
    }
    // The stored values are exactly HMAC-SHA256(HKDF(totp.key), uid NUL code).
    const key = Buffer.from(hkdfSync("sha256", readFileSync(join(dir, "totp.key")), Buffer.alloc(0), "varco totp recovery code v1", 32));
    const db = new Database(join(dir, "state.db"), { readonly: true });
    const stored = new Set(
      (db.prepare("SELECT code_hash FROM recovery_codes WHERE uid = ?").all("mario.rossi") as { code_hash: string }[]).map(
        (r) => r.code_hash,
      ),
    );
    db.close();
    const expected = new Set(
      codes.map(
        (c) =>
          `hmac1:${createHmac("sha256", key)
            .update(`mario.rossi\0${c.replaceAll("-", "")}`)
            .digest("hex")}`,
      ),
    );
    expect(stored).toEqual(expected);
  });

  it("old 8-character codes stored as plain SHA-256 no longer match and are not counted", async () => {
    const dir = tmp();
    const store = openTotpStore(dir, settings);
    const db = new Database(join(dir, "state.db"));
    db.prepare("INSERT INTO recovery_codes (uid, code_hash) VALUES (?, ?)").run("u", sha256("abcd-efgh"));
    // Even a new-format code whose plain SHA-256 sits in the table is refused.
    const code = newOneTimeCode();
    db.prepare("INSERT INTO recovery_codes (uid, code_hash) VALUES (?, ?)").run("u", sha256(code));
    db.close();
    expect(await store.useRecoveryCode("u", "abcd-efgh")).toBe(false);
    expect(await store.useRecoveryCode("u", code)).toBe(false);
    expect(await store.recoveryCodesLeft("u")).toBe(0);
    store.close();
  });

  it("two store handles racing with the same recovery code: only one wins", async () => {
    const dir = tmp();
    const a = openTotpStore(dir, settings);
    const b = openTotpStore(dir, settings);
    const [code] = newRecoveryCodes(1) as [string];
    await a.setRecoveryCodes("u", [code]);
    expect([await b.useRecoveryCode("u", code), await a.useRecoveryCode("u", code)]).toEqual([true, false]);
    a.close();
    b.close();
  });
});
