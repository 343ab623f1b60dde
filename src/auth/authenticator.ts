/**
 * The factors a login chain is made of, behind one narrow interface the SSH server calls:
 * password (LDAP bind, or a break-glass local user), publickey (directory attribute or keys file),
 * TOTP (or a single-use recovery code), enrolment on first login, and lockout accounting.
 * No check tells the client which factor failed: the server sends one generic refusal; the
 * verdict's `reason` goes only to the log and the audit.
 */
import QRCode from "qrcode";
import type ssh2 from "ssh2";
import { type Directory, DirectoryUnavailableError } from "./ldap.ts";
import type { LocalUsers } from "./local.ts";
import type { Lockout } from "./lockout.ts";
import { findKey, keysFilePath, parseAuthorizedKeys, readKeysFile } from "./publickey.ts";
import { checkCandidate, newRecoveryCodes, newSecret, otpauthUri, type TotpSettings, type TotpStore } from "./totp.ts";

export type PasswordVerdict =
  | { readonly kind: "ok"; readonly groups: readonly string[]; readonly local: boolean }
  | { readonly kind: "invalid" }
  | { readonly kind: "unavailable"; readonly reason: string };

export type TotpVerdict = "ok" | "recovery" | "invalid";

export interface Enrolment {
  readonly secret: string;
  readonly uri: string;
  /** The otpauth URI as a QR code drawn with Unicode half blocks (for the SSH instructions). */
  readonly qr: string;
}

export interface Authenticator {
  /** Whether the uid or the source address is locked out at `nowMs`. */
  locked(uid: string, source: string, nowMs: number): boolean;
  /** Checks a password (directory, or local break-glass user). Never throws. */
  password(uid: string, password: string): Promise<PasswordVerdict>;
  /**
   * Checks a public key offered by the client (RFC 4252 §7). With `signature`, also verifies it over `blob`.
   * Returns the user's groups when the key is authorized (and, if given, the signature is good).
   */
  publickey(
    uid: string,
    key: { algo: string; data: Buffer },
    signed?: { blob: Buffer; signature: Buffer; hashAlgo?: string | undefined },
  ): Promise<{ groups: readonly string[] } | undefined>;
  hasTotp(uid: string): boolean;
  /** Checks and consumes a TOTP code, or else a recovery code. Never throws. */
  totp(uid: string, code: string, nowMs: number): Promise<TotpVerdict>;
  /** Whether users without a secret enrol inside the SSH login. */
  readonly enrolOnFirstLogin: boolean;
  enrolment(uid: string): Promise<Enrolment>;
  /** Stores the secret if `code` is valid for it; returns the new recovery codes, or undefined. */
  confirmEnrolment(uid: string, secret: string, code: string, nowMs: number): Promise<string[] | undefined>;
  /** Counts a failed login; says whether it just locked the uid or the source. */
  failed(uid: string, source: string, nowMs: number): { lockedUid: boolean; lockedSource: boolean };
  succeeded(uid: string): void;
}

export interface AuthenticatorParts {
  readonly directory: Directory | undefined;
  readonly local: LocalUsers;
  readonly totp: TotpStore;
  readonly totpSettings: TotpSettings;
  readonly lockout: Lockout;
  readonly enrolOnFirstLogin: boolean;
  /** auth.totp.secrets: ldap — the secret is read from the directory at each login. */
  readonly totpFromDirectory: boolean;
  /** Public key sources. */
  readonly publickey: { readonly fromDirectory: boolean; readonly keysFile?: string | undefined };
}

/** Composes the factor checks into an Authenticator. */
export function createAuthenticator(p: AuthenticatorParts): Authenticator {
  const lookupKeys = async (uid: string): Promise<{ groups: readonly string[]; lines: string[] } | undefined> => {
    const fileLines = readKeysFile(p.publickey.keysFile ? keysFilePath(p.publickey.keysFile, uid) : undefined);
    if (p.local.has(uid)) return { groups: p.local.groups(uid) ?? [], lines: fileLines };
    if (!p.directory) return undefined;
    const v = await p.directory.lookup(uid);
    if (v.kind !== "ok") return undefined;
    return { groups: v.groups, lines: [...(p.publickey.fromDirectory ? v.sshKeys : []), ...fileLines] };
  };
  return {
    locked(uid, source, nowMs) {
      const l = p.lockout.locked(uid, source, nowMs);
      return l.uid || l.source;
    },
    async password(uid, password) {
      if (p.local.has(uid)) {
        const ok = await p.local.verify(uid, password);
        return ok ? { kind: "ok", groups: ok.groups, local: true } : { kind: "invalid" };
      }
      if (!p.directory) {
        await p.local.verify(uid, password);
        return { kind: "invalid" };
      }
      try {
        const v = await p.directory.verifyPassword(uid, password);
        return v.kind === "ok" ? { kind: "ok", groups: v.groups, local: false } : { kind: "invalid" };
      } catch (err) {
        const reason = err instanceof DirectoryUnavailableError ? err.message : `directory error: ${(err as Error).message}`;
        return { kind: "unavailable", reason };
      }
    },
    async publickey(uid, key, signed) {
      let found: Awaited<ReturnType<typeof lookupKeys>>;
      try {
        found = await lookupKeys(uid);
      } catch {
        return undefined;
      }
      if (!found) return undefined;
      const match = findKey(parseAuthorizedKeys(found.lines), key.algo, key.data) as ssh2.ParsedKey | undefined;
      if (!match) return undefined;
      if (signed && !match.verify(signed.blob, signed.signature, signed.hashAlgo)) return undefined;
      return { groups: found.groups };
    },
    // With directory secrets, enrolment is the directory's business: every user counts as enrolled.
    hasTotp: (uid) => p.totpFromDirectory || p.totp.hasSecret(uid),
    async totp(uid, code, nowMs) {
      try {
        if (p.totpFromDirectory && p.directory && !p.local.has(uid)) {
          const v = await p.directory.lookup(uid);
          if (v.kind === "ok" && v.totpSecret && (await p.totp.verifyExternal(uid, v.totpSecret, code, nowMs))) return "ok";
          return p.totp.useRecoveryCode(uid, code) ? "recovery" : "invalid";
        }
        if (await p.totp.verifyCode(uid, code, nowMs)) return "ok";
        return p.totp.useRecoveryCode(uid, code) ? "recovery" : "invalid";
      } catch {
        return "invalid";
      }
    },
    enrolOnFirstLogin: p.enrolOnFirstLogin && !p.totpFromDirectory,
    async enrolment(uid) {
      const secret = newSecret();
      const uri = otpauthUri(p.totpSettings, uid, secret);
      const qr = await QRCode.toString(uri, { type: "utf8", errorCorrectionLevel: "L" });
      return { secret, uri, qr };
    },
    async confirmEnrolment(uid, secret, code, nowMs) {
      if (!(await checkCandidate(p.totpSettings, secret, code, nowMs))) return undefined;
      if (p.totp.hasSecret(uid)) return undefined;
      p.totp.setSecret(uid, secret);
      // Consume the step used to confirm, so the same code cannot log in again.
      await p.totp.verifyCode(uid, code, nowMs);
      const codes = newRecoveryCodes();
      p.totp.setRecoveryCodes(uid, codes);
      return codes;
    },
    failed: (uid, source, nowMs) => p.lockout.fail(uid, source, nowMs),
    succeeded: (uid) => p.lockout.succeed(uid),
  };
}
