/**
 * TOTP (RFC 6238, otplib) with secrets kept in the gateway's state DB, encrypted at rest with
 * AES-256-GCM under a key file the gateway creates (mode 0600). A time step, once used, is never
 * accepted again for the same uid (RFC 6238 §5.2).
 *
 * Enrolment invitations and recovery codes are 80-bit one-time codes, stored only as
 * HMAC-SHA256 (RFC 2104) under keys derived from the same key file with HKDF (RFC 5869), so a
 * copy of state.db alone cannot be brute-forced offline.
 *
 * Storage goes through {@link AuthState} (SQLite or PostgreSQL); every method that touches it is
 * async and rejects when the state cannot be reached (the login then fails closed).
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generateSecret, generateSync, generateURI, verify } from "otplib";
import { type AuthState, openSqliteState } from "../state/index.ts";

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
  /**
   * Stores (replacing) a base32 secret for `uid` and drops any pending enrolment invitation
   * (an enrolled user has no use for one).
   * @throws TotpSecretError when the secret is not base32 or shorter than 128 bits.
   */
  setSecret(uid: string, base32: string): Promise<void>;
  hasSecret(uid: string): Promise<boolean>;
  /**
   * Forgets the secret (with its last used step), the recovery codes and any enrolment
   * invitation, in one transaction; returns whether a secret existed. A user who is reset needs a
   * new invitation (`invite`) to enrol at login. The replay guard of directory-held secrets
   * (`verifyExternal`) is kept: forgetting it would let a used code be replayed.
   */
  reset(uid: string): Promise<boolean>;
  /**
   * Checks a code and, if valid, consumes its time step atomically (with `consume: false`, only
   * says whether it would be accepted now: a login checks every factor first and consumes only
   * when all of them passed).
   * @param nowMs the current time, ms since epoch (injectable clock).
   */
  verifyCode(uid: string, code: string, nowMs: number, consume?: boolean): Promise<boolean>;
  /**
   * Checks a code against a secret kept elsewhere (the directory) and consumes its step in this
   * store, so a code is still single use (`consume: false`: check only).
   */
  verifyExternal(uid: string, secret: string, code: string, nowMs: number, consume?: boolean): Promise<boolean>;
  /** {@link directorySecretBinding} under this store's key. */
  directoryBinding(uid: string, secret: string | undefined): string | undefined;
  /**
   * Replaces the user's recovery codes (from `newRecoveryCodes`), stored only as
   * HMAC-SHA256(uid, code) under a key derived from totp.key.
   * @throws TotpSecretError when a code is not in the `newRecoveryCodes` format.
   */
  setRecoveryCodes(uid: string, codes: readonly string[]): Promise<void>;
  /**
   * Consumes a recovery code atomically (compare-and-set in SQL: two logins racing with the same
   * code cannot both win); true if it was valid and unused. Case, spaces and dashes of the typed
   * text are ignored (`normaliseOneTimeCode`). Codes of the old 8-character format never match.
   */
  useRecoveryCode(uid: string, code: string, consume?: boolean): Promise<boolean>;
  /** Unused recovery codes left (old-format rows, which can no longer match, are not counted). */
  recoveryCodesLeft(uid: string): Promise<number>;
  /**
   * Creates a one-time enrolment invitation for `uid`, replacing any earlier one, and returns its
   * code (`newOneTimeCode` format, 80 bits). Only HMAC-SHA256(uid, code) and the expiry are kept:
   * the code cannot be shown again.
   * @param validMs how long the code stays valid, ms (> 0).
   * @param nowMs the current time, ms since epoch; the code expires at `nowMs + validMs`.
   * @throws RangeError when `validMs` is not a positive finite number.
   */
  invite(uid: string, validMs: number, nowMs: number): Promise<string>;
  /** Whether `uid` has an unused invitation that has not expired at `nowMs`. */
  hasInvitation(uid: string, nowMs: number): Promise<boolean>;
  /**
   * Consumes `uid`'s invitation if `code` is its code and it has not expired at `nowMs`
   * (expiry exclusive) and `uid` has no secret yet. Atomic single use (one compare-and-delete statement): of two concurrent
   * callers, even through different store handles, at most one gets true. Case, spaces and dashes
   * of the typed text are ignored, as are Crockford look-alikes (i/l → 1, o → 0).
   */
  consumeInvitation(uid: string, code: string, nowMs: number): Promise<boolean>;
  /** Whether `code` is the uid's unexpired invitation, without consuming it (the login consumes it at confirmation). */
  invitationValid(uid: string, code: string, nowMs: number): Promise<boolean>;
  /** Closes the state if this store opened it ({@link openTotpStore}); a shared {@link AuthState} stays open. */
  close(): Promise<void>;
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

/**
 * Alphabet of one-time codes: Crockford's base32 (https://www.crockford.com/base32.html) in
 * lower case: 32 symbols without i, l, o and u, so 5 random bits map to one symbol without bias.
 */
const CODE_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";
/** Symbols per code: 16 × 5 bits = 80 bits. */
const CODE_SYMBOLS = 16;
const CODE_SHAPE = new RegExp(`^[${CODE_ALPHABET}]{${CODE_SYMBOLS}}$`);

/**
 * A random one-time code: 80 bits from `crypto.randomBytes`, written as 16 Crockford base32
 * symbols in groups of four, `xxxx-xxxx-xxxx-xxxx` (lower case). Each symbol is exactly 5 bits of
 * the random bytes, so the code is uniform over 2^80 values (no modulo bias).
 */
export function newOneTimeCode(): string {
  const bytes = randomBytes((CODE_SYMBOLS * 5) / 8);
  let bits = 0n;
  for (const b of bytes) bits = (bits << 8n) | BigInt(b);
  let s = "";
  for (let i = CODE_SYMBOLS - 1; i >= 0; i--) s += CODE_ALPHABET[Number((bits >> BigInt(i * 5)) & 31n)];
  return (s.match(/.{4}/g) as string[]).join("-");
}

/**
 * What a user typed, reduced to the 16 symbols of a one-time code: lower case, spaces (any
 * Unicode white space) and dashes (ASCII hyphen-minus) removed, Crockford look-alikes mapped
 * (i, l → 1; o → 0). Returns undefined for anything else, e.g. the 8-character codes of earlier
 * versions or non-ASCII letters.
 */
export function normaliseOneTimeCode(typed: string): string | undefined {
  if (typed.length > 100) return undefined;
  const s = typed.toLowerCase().replace(/[\s-]/g, "").replace(/[il]/g, "1").replace(/o/g, "0");
  return CODE_SHAPE.test(s) ? s : undefined;
}

/** Ten single-use recovery codes in the `newOneTimeCode` format (80 bits each). */
export function newRecoveryCodes(n = 10): string[] {
  return Array.from({ length: n }, newOneTimeCode);
}

/** Prefix of keyed recovery-code hashes; rows without it (plain SHA-256 of old codes) never match. */
const RECOVERY_MAC_PREFIX = "hmac1:";

/** Purpose labels for HKDF (RFC 5869 §3.2 "info"): one independent key per use of the key file. */
const KDF_INVITATION = "varco totp enrolment invitation v1";
const KDF_RECOVERY = "varco totp recovery code v1";
const KDF_REMEMBER = "varco remembered factor binding v1";

/** HMAC-SHA256 key for `purpose`, derived from the 32-byte at-rest key with HKDF-SHA256. */
function deriveKey(key: Buffer, purpose: string): Buffer {
  return Buffer.from(hkdfSync("sha256", key, Buffer.alloc(0), purpose, 32));
}

/**
 * What a remembered second factor (`auth.totp.remember`, remember.ts) is bound to when the user's
 * secret is read from the directory (`auth.totp.secrets: ldap`): `ldap:` and the hex
 * HMAC-SHA256 of `uid NUL secret` (the secret as TOTP checks it, {@link normaliseSecret}) under a
 * key HKDF-derived from the 32-byte `totp.key`. Keyed, so the login state (which may be a shared
 * PostgreSQL) holds nothing a guessed secret could be checked against offline, and two users with
 * one secret get unrelated values; another secret gives another value. Every node sharing a state
 * has the same key file (checked at start), so they agree.
 * @returns undefined for a missing or unusable secret: nothing may be remembered for it.
 */
export function directorySecretBinding(key: Buffer, uid: string, secret: string | undefined): string | undefined {
  let normal: string;
  try {
    normal = normaliseSecret(secret ?? "");
  } catch {
    return undefined;
  }
  return `ldap:${createHmac("sha256", deriveKey(key, KDF_REMEMBER)).update(`${uid}\0${normal}`, "utf8").digest("hex")}`;
}

/** HKDF purpose of the key check value. */
const KDF_CHECK = "varco totp key check v1";

/**
 * A check value of the at-rest key (hex HMAC-SHA256 of a fixed label under an HKDF-derived key):
 * equal for equal keys, and tells nothing about the key. Stored once in the login state, so a node
 * whose totp.key differs from the one the state was written with is refused at start instead of
 * failing every login.
 */
export function totpKeyCheck(key: Buffer): string {
  return createHmac("sha256", deriveKey(key, KDF_CHECK)).update("varco totp key check", "utf8").digest("hex");
}

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

/**
 * Opens the TOTP store on a SQLite state in `stateDir/state.db` (migrated on open), with the key
 * `stateDir/totp.key` (created 0600 on first use). `close()` closes the database.
 * @throws TotpSecretError for a key file of the wrong size; StateError for a newer schema.
 */
export function openTotpStore(stateDir: string, settings: TotpSettings): TotpStore {
  const key = loadOrCreateKey(stateDir);
  return totpStoreOn(openSqliteState(stateDir), key, settings, true);
}

/**
 * The TOTP store over `state` (either engine) with the 32-byte at-rest key `key` (every node
 * sharing a state needs the same key file). With `owned`, `close()` closes `state`.
 */
export function totpStoreOn(state: AuthState, key: Buffer, settings: TotpSettings, owned = false): TotpStore {
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

  // The uid is part of the MAC input: the same code for two users gives unrelated rows. The code
  // has a fixed length, so `uid NUL code` is unambiguous.
  const invitationKey = deriveKey(key, KDF_INVITATION);
  const recoveryKey = deriveKey(key, KDF_RECOVERY);
  const mac = (k: Buffer, uid: string, code: string) => createHmac("sha256", k).update(`${uid}\0${code}`, "utf8").digest("hex");
  const recoveryMac = (uid: string, code: string) => RECOVERY_MAC_PREFIX + mac(recoveryKey, uid, code);

  return {
    async setSecret(uid, base32) {
      const secret = normaliseSecret(base32);
      await state.putSecret(uid, encrypt(uid, secret), new Date().toISOString());
    },
    hasSecret: (uid) => state.hasSecret(uid),
    reset: (uid) => state.resetUser(uid),
    async invite(uid, validMs, nowMs) {
      if (!Number.isFinite(validMs) || validMs <= 0) throw new RangeError("an invitation must be valid for a positive duration");
      if (!Number.isFinite(nowMs)) throw new RangeError("nowMs must be a finite time");
      const code = newOneTimeCode();
      const normal = normaliseOneTimeCode(code) as string;
      await state.putInvitation(uid, mac(invitationKey, uid, normal), Math.floor(nowMs + validMs), Math.floor(nowMs));
      return code;
    },
    hasInvitation: (uid, nowMs) => state.hasInvitation(uid, nowMs),
    async invitationValid(uid, code, nowMs) {
      const normal = normaliseOneTimeCode(code);
      if (normal === undefined) return false;
      return state.invitationMatches(uid, mac(invitationKey, uid, normal), nowMs);
    },
    async consumeInvitation(uid, code, nowMs) {
      const normal = normaliseOneTimeCode(code);
      if (normal === undefined) return false;
      // Compare-and-delete in one statement: the row goes with the first caller that matches it.
      // The lookup is by keyed MAC, so its timing tells nothing about the code.
      return state.takeInvitation(uid, mac(invitationKey, uid, normal), nowMs);
    },
    directoryBinding: (uid, secret) => directorySecretBinding(key, uid, secret),
    async verifyExternal(uid, secret, code, nowMs, consume = true) {
      let normal: string;
      try {
        normal = normaliseSecret(secret);
      } catch {
        return false;
      }
      const last = await state.externalStep(uid);
      const step = await matchStep(settings, normal, code, nowMs);
      if (step === undefined || (last !== undefined && step <= last)) return false;
      if (!consume) return true;
      return state.consumeExternalStep(uid, step);
    },
    async setRecoveryCodes(uid, codes) {
      const macs = codes.map((c) => {
        const normal = normaliseOneTimeCode(c);
        if (normal === undefined) throw new TotpSecretError("a recovery code must be 16 symbols of Crockford base32 (newRecoveryCodes)");
        return recoveryMac(uid, normal);
      });
      await state.replaceRecoveryCodes(uid, macs);
    },
    async useRecoveryCode(uid, code, consume = true) {
      const normal = normaliseOneTimeCode(code);
      if (normal === undefined) return false;
      if (!consume) return state.recoveryCodeUnused(uid, recoveryMac(uid, normal));
      return state.useRecoveryCode(uid, recoveryMac(uid, normal), new Date().toISOString());
    },
    recoveryCodesLeft: (uid) => state.recoveryCodesLeft(uid, RECOVERY_MAC_PREFIX),
    async verifyCode(uid, code, nowMs, consume = true) {
      const row = await state.secret(uid);
      if (!row) return false;
      const step = await matchStep(settings, decrypt(uid, row), code, nowMs);
      if (step === undefined || (row.lastStep !== null && step <= row.lastStep)) return false;
      if (!consume) return true;
      // Compare-and-set: two logins racing with the same code (on any node) cannot both win.
      return state.consumeSecretStep(uid, step);
    },
    close: async () => {
      if (owned) await state.close();
    },
  };
}
