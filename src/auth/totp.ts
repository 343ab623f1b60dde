/**
 * TOTP (RFC 6238, otplib) with secrets kept in the gateway's state DB, encrypted at rest with
 * AES-256-GCM under a key file the gateway creates (mode 0600). A time step, once used, is never
 * accepted again for the same uid (RFC 6238 §5.2).
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { generateSecret, generateSync, generateURI, verify } from "otplib";

export interface TotpSettings {
  readonly issuer: string;
  readonly digits: 6 | 7 | 8;
  /** Time step, ms. */
  readonly periodMs: number;
  /** Steps accepted either side of now. */
  readonly window: number;
}

/** Thrown for an unusable secret (e.g. shorter than 128 bits, not base32). */
export class TotpSecretError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TotpSecretError";
  }
}

export interface TotpStore {
  /** Stores (replacing) a base32 secret for `uid`. */
  setSecret(uid: string, base32: string): void;
  hasSecret(uid: string): boolean;
  /** Forgets the secret; returns whether one existed. */
  reset(uid: string): boolean;
  /**
   * Checks a code and, if valid, consumes its time step atomically.
   * @param nowMs the current time, ms since epoch (injectable clock).
   */
  verifyCode(uid: string, code: string, nowMs: number): Promise<boolean>;
  /**
   * Checks a code against a secret kept elsewhere (the directory) and consumes its step in this
   * store, so a code is still single use.
   */
  verifyExternal(uid: string, secret: string, code: string, nowMs: number): Promise<boolean>;
  /** Replaces the user's recovery codes (stored as SHA-256 hashes). */
  setRecoveryCodes(uid: string, codes: readonly string[]): void;
  /** Consumes a recovery code; true if it was valid and unused. */
  useRecoveryCode(uid: string, code: string): boolean;
  /** Unused recovery codes left. */
  recoveryCodesLeft(uid: string): number;
  close(): void;
}

/**
 * The RFC 6238 time step `code` belongs to for `secret` at `nowMs` (within ±window steps), or
 * undefined. Only exactly `digits` ASCII digits are considered; comparison is constant-time (otplib).
 */
export async function matchStep(settings: TotpSettings, secret: string, code: string, nowMs: number): Promise<number | undefined> {
  if (!new RegExp(`^[0-9]{${settings.digits}}$`).test(code)) return undefined;
  const periodS = Math.round(settings.periodMs / 1000);
  const epoch = Math.floor(nowMs / 1000);
  const r = await verify({
    secret,
    token: code,
    digits: settings.digits,
    period: periodS,
    epoch,
    epochTolerance: settings.window * periodS,
  });
  return r.valid ? Math.floor(epoch / periodS) + r.delta : undefined;
}

/** Whether `code` is a valid code for a secret that is not stored yet (enrolment confirmation). */
export async function checkCandidate(settings: TotpSettings, secret: string, code: string, nowMs: number): Promise<boolean> {
  return (await matchStep(settings, secret, code, nowMs)) !== undefined;
}

/** Ten single-use recovery codes, `xxxx-xxxx` from a 32-letter alphabet without look-alikes (40 bits each). */
export function newRecoveryCodes(n = 10): string[] {
  const alphabet = "abcdefghjkmnpqrstuvwxyz23456789";
  return Array.from({ length: n }, () => {
    const b = randomBytes(8);
    const s = Array.from(b, (x) => alphabet[x % alphabet.length]).join("");
    return `${s.slice(0, 4)}-${s.slice(4)}`;
  });
}

const RECOVERY_FORMAT = /^[a-z0-9]{4}-[a-z0-9]{4}$/;
const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

const SCHEMA = `
CREATE TABLE IF NOT EXISTS totp_steps (uid TEXT PRIMARY KEY, last_step INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS recovery_codes (uid TEXT NOT NULL, code_hash TEXT NOT NULL, used_at TEXT, PRIMARY KEY (uid, code_hash));
CREATE TABLE IF NOT EXISTS totp (
  uid TEXT PRIMARY KEY,
  nonce BLOB NOT NULL,
  ciphertext BLOB NOT NULL,
  tag BLOB NOT NULL,
  last_step INTEGER,
  created_at TEXT NOT NULL
);`;

/** Loads the 32-byte at-rest key from `state_dir/totp.key`, creating it (0600) on first use. */
export function loadOrCreateKey(stateDir: string): Buffer {
  const file = join(stateDir, "totp.key");
  if (!existsSync(file)) {
    mkdirSync(stateDir, { recursive: true, mode: 0o750 });
    writeFileSync(file, randomBytes(32), { mode: 0o600, flag: "wx" });
  }
  const key = readFileSync(file);
  if (key.length !== 32) throw new TotpSecretError(`${file} must hold exactly 32 bytes; delete it only if no secrets are enrolled`);
  return key;
}

/** Validates a base32 secret: at least 16 bytes (128 bits, RFC 4226 §4 R6). Returns it normalised. */
export function normaliseSecret(base32: string): string {
  const s = base32.replace(/[\s-]/g, "").replace(/=+$/, "").toUpperCase();
  if (!/^[A-Z2-7]+$/.test(s)) throw new TotpSecretError("the secret must be base32 (letters A-Z and digits 2-7)");
  if (Math.floor((s.length * 5) / 8) < 16) throw new TotpSecretError("the secret must be at least 128 bits (26 base32 characters)");
  return s;
}

/** A new random 160-bit base32 secret. */
export function newSecret(): string {
  return generateSecret();
}

/** The `otpauth://totp/…` URI for authenticator apps. */
export function otpauthUri(settings: TotpSettings, uid: string, secret: string): string {
  return generateURI({
    issuer: settings.issuer,
    label: uid,
    secret,
    digits: settings.digits,
    period: Math.round(settings.periodMs / 1000),
  });
}

/** The code for `secret` at `nowMs` (used by the demo and tests, never by the login path). */
export function currentCode(settings: TotpSettings, secret: string, nowMs: number): string {
  return generateSync({
    secret,
    digits: settings.digits,
    period: Math.round(settings.periodMs / 1000),
    epoch: Math.floor(nowMs / 1000),
  });
}

/** Opens the TOTP store in `stateDir/state.db`. */
export function openTotpStore(stateDir: string, settings: TotpSettings): TotpStore {
  const key = loadOrCreateKey(stateDir);
  const db = new Database(join(stateDir, "state.db"));
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  db.exec(SCHEMA);

  const encrypt = (uid: string, plain: string) => {
    const nonce = randomBytes(12);
    const c = createCipheriv("aes-256-gcm", key, nonce);
    c.setAAD(Buffer.from(uid));
    const ciphertext = Buffer.concat([c.update(plain, "utf8"), c.final()]);
    return { nonce, ciphertext, tag: c.getAuthTag() };
  };
  const decrypt = (uid: string, row: { nonce: Buffer; ciphertext: Buffer; tag: Buffer }): string => {
    const d = createDecipheriv("aes-256-gcm", key, row.nonce);
    d.setAAD(Buffer.from(uid));
    d.setAuthTag(row.tag);
    return Buffer.concat([d.update(row.ciphertext), d.final()]).toString("utf8");
  };

  const getRow = db.prepare<[string], { nonce: Buffer; ciphertext: Buffer; tag: Buffer; last_step: number | null }>(
    "SELECT nonce, ciphertext, tag, last_step FROM totp WHERE uid = ?",
  );
  const consume = db.prepare("UPDATE totp SET last_step = ? WHERE uid = ? AND (last_step IS NULL OR last_step < ?)");

  return {
    setSecret(uid, base32) {
      const secret = normaliseSecret(base32);
      const { nonce, ciphertext, tag } = encrypt(uid, secret);
      db.prepare(
        "INSERT INTO totp (uid, nonce, ciphertext, tag, last_step, created_at) VALUES (?, ?, ?, ?, NULL, ?) " +
          "ON CONFLICT(uid) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, tag = excluded.tag, last_step = NULL, created_at = excluded.created_at",
      ).run(uid, nonce, ciphertext, tag, new Date().toISOString());
    },
    hasSecret: (uid) => getRow.get(uid) !== undefined,
    reset: (uid) => {
      db.prepare("DELETE FROM recovery_codes WHERE uid = ?").run(uid);
      return db.prepare("DELETE FROM totp WHERE uid = ?").run(uid).changes > 0;
    },
    async verifyExternal(uid, secret, code, nowMs) {
      let normal: string;
      try {
        normal = normaliseSecret(secret);
      } catch {
        return false;
      }
      const last = (db.prepare("SELECT last_step FROM totp_steps WHERE uid = ?").get(uid) as { last_step: number } | undefined)?.last_step;
      const step = await matchStep(settings, normal, code, nowMs);
      if (step === undefined || (last !== undefined && step <= last)) return false;
      const r = db
        .prepare(
          "INSERT INTO totp_steps (uid, last_step) VALUES (?, ?) ON CONFLICT(uid) DO UPDATE SET last_step = excluded.last_step WHERE totp_steps.last_step < excluded.last_step",
        )
        .run(uid, step);
      return r.changes === 1;
    },
    setRecoveryCodes(uid, codes) {
      db.transaction(() => {
        db.prepare("DELETE FROM recovery_codes WHERE uid = ?").run(uid);
        for (const c of codes) db.prepare("INSERT INTO recovery_codes (uid, code_hash) VALUES (?, ?)").run(uid, sha256(c));
      })();
    },
    useRecoveryCode(uid, code) {
      const c = code.trim().toLowerCase();
      if (!RECOVERY_FORMAT.test(c)) return false;
      return (
        db
          .prepare("UPDATE recovery_codes SET used_at = ? WHERE uid = ? AND code_hash = ? AND used_at IS NULL")
          .run(new Date().toISOString(), uid, sha256(c)).changes === 1
      );
    },
    recoveryCodesLeft: (uid) =>
      (db.prepare("SELECT COUNT(*) AS n FROM recovery_codes WHERE uid = ? AND used_at IS NULL").get(uid) as { n: number }).n,
    async verifyCode(uid, code, nowMs) {
      const row = getRow.get(uid);
      if (!row) return false;
      const step = await matchStep(settings, decrypt(uid, row), code, nowMs);
      if (step === undefined || (row.last_step !== null && step <= row.last_step)) return false;
      // Compare-and-set: two logins racing with the same code cannot both win.
      return consume.run(step, uid, step).changes === 1;
    },
    close: () => db.close(),
  };
}
