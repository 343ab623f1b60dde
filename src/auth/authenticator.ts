/**
 * The factor checks behind the login state machine (`LoginFactors`): account lookup (break-glass
 * local users first, then the directory), password (LDAP bind or argon2id), publickey (directory
 * attribute or keys file), TOTP or a single-use recovery code, enrolment with an invitation, and
 * lockout accounting. Unknown users cost what known users cost: a dummy bind, a dummy argon2 hash
 * and a TOTP check against a dummy secret.
 */
import QRCode from "qrcode";
import type ssh2 from "ssh2";
import { type AuthState, StateError } from "../state/index.ts";
import { type Directory, DirectoryUnavailableError } from "./ldap.ts";
import type { LocalUsers } from "./local.ts";
import type { Lockout } from "./lockout.ts";
import type { Account, AccountLookup, Enrolment, FactorVerdict, LoginFactors } from "./login.ts";
import { findKey, keysFilePath, parseAuthorizedKeys, readKeysFile } from "./publickey.ts";
import { LOCAL_TOTP_BINDING, REMEMBER_MAX_MS, rememberedValid } from "./remember.ts";
import { matchStep, newRecoveryCodes, newSecret, otpauthUri, type TotpSettings, type TotpStore } from "./totp.ts";

/** An account as the factor checks see it. */
export interface GatewayAccount extends Account {
  /** The directory entry's DN (absent for break-glass users). */
  readonly dn?: string | undefined;
  /** The typed uid that found it (for the directory's own filters). */
  readonly typed: string;
  readonly sshKeys: readonly string[];
  /** With auth.totp.secrets: ldap, the secret from the directory. Never log it. */
  readonly totpSecret?: string | undefined;
}

export type Authenticator = LoginFactors<GatewayAccount>;

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
  /**
   * `auth.totp.remember`: how long a full key + code login spares the code (ms; 0 or absent: off,
   * capped at {@link REMEMBER_MAX_MS}) and the login state that keeps the entries.
   */
  readonly remember?: { readonly periodMs: number; readonly state: Pick<AuthState, "remember" | "remembered"> } | undefined;
}

/** A secret no account has: unknown users' codes are checked against it, so they cost the same. */
const DUMMY_SECRET = newSecret();

/** Composes the factor checks. */
export function createAuthenticator(p: AuthenticatorParts): Authenticator {
  const localAccount = (typed: string): GatewayAccount | undefined => {
    const uid = p.local.canonical(typed);
    if (uid === undefined) return undefined;
    return { uid, typed, groups: p.local.groups(uid) ?? [], local: true, active: true, sshKeys: [] };
  };
  /** The TOTP secret a remembered entry of `a` is bound to (src/auth/remember.ts). */
  const bindingOf = (a: GatewayAccount) => (p.totpFromDirectory ? p.totp.directoryBinding(a.uid, a.totpSecret) : LOCAL_TOTP_BINDING);
  const keysFor = (a: GatewayAccount): string[] => {
    const fileLines = readKeysFile(p.publickey.keysFile ? keysFilePath(p.publickey.keysFile, a.uid) : undefined);
    return [...(p.publickey.fromDirectory ? a.sshKeys : []), ...fileLines];
  };
  return {
    async lookup(typed): Promise<AccountLookup<GatewayAccount>> {
      const local = localAccount(typed);
      if (local) return { kind: "found", account: local };
      if (!p.directory) return { kind: "unknown" };
      try {
        const v = await p.directory.lookup(typed);
        if (v.kind === "invalid") return { kind: "unknown" };
        if (v.kind === "inactive")
          return { kind: "found", account: { uid: v.uid, typed, groups: [], local: false, active: false, sshKeys: [], dn: v.dn } };
        return {
          kind: "found",
          account: {
            uid: v.uid,
            typed,
            dn: v.dn,
            groups: v.groups,
            local: false,
            active: true,
            sshKeys: v.sshKeys,
            totpSecret: v.totpSecret,
          },
        };
      } catch (err) {
        return { kind: "unavailable", reason: err instanceof DirectoryUnavailableError ? err.message : (err as Error).message };
      }
    },
    async password(account, typed, password): Promise<FactorVerdict> {
      if (account?.local) return (await p.local.verify(account.uid, password)) ? "ok" : "invalid";
      if (!p.directory) {
        await p.local.verify("", password);
        return "invalid";
      }
      try {
        const v = await p.directory.verifyPassword(account?.typed ?? typed, password);
        // The entry that bound must be the one the lookup found (a directory change in between refuses).
        if (v.kind === "ok") return account && v.uid === account.uid ? "ok" : "invalid";
        return v.kind === "inactive" ? "inactive" : "invalid";
      } catch (err) {
        return { unavailable: err instanceof DirectoryUnavailableError ? err.message : `directory error: ${(err as Error).message}` };
      }
    },
    async publickey(account, key, signed) {
      const match = findKey(parseAuthorizedKeys(keysFor(account)), key.algo, key.data) as ssh2.ParsedKey | undefined;
      if (!match) return false;
      return !signed || match.verify(signed.blob, signed.signature, signed.hashAlgo) === true;
    },
    // With directory secrets, enrolment is the directory's business: every user counts as enrolled.
    hasTotp: async (a) => (p.totpFromDirectory && !a.local) || (await p.totp.hasSecret(a.uid)),
    async totp(account, code, nowMs, consume) {
      try {
        if (!account) {
          await matchStep(p.totpSettings, DUMMY_SECRET, code, nowMs);
          return "invalid";
        }
        if (p.totpFromDirectory && !account.local) {
          if (account.totpSecret && (await p.totp.verifyExternal(account.uid, account.totpSecret, code, nowMs, consume))) return "ok";
        } else if (await p.totp.verifyCode(account.uid, code, nowMs, consume)) return "ok";
        return (await p.totp.useRecoveryCode(account.uid, code, consume)) ? "recovery" : "invalid";
      } catch (err) {
        // The state cannot be reached: the login fails closed with the cause logged (not "a wrong code").
        if (err instanceof StateError) throw err;
        return "invalid";
      }
    },
    enrolOnFirstLogin: p.enrolOnFirstLogin && !p.totpFromDirectory,
    invitationValid: (a, code, nowMs) => p.totp.invitationValid(a.uid, code, nowMs),
    async enrolment(a): Promise<Enrolment> {
      const secret = newSecret();
      const uri = otpauthUri(p.totpSettings, a.uid, secret);
      const qr = await QRCode.toString(uri, { type: "utf8", errorCorrectionLevel: "L" });
      return { secret, uri, qr };
    },
    async confirmEnrolment(a, secret, code, invitation, nowMs) {
      if ((await matchStep(p.totpSettings, secret, code, nowMs)) === undefined) return undefined;
      if (await p.totp.hasSecret(a.uid)) return undefined;
      if (!(await p.totp.consumeInvitation(a.uid, invitation, nowMs))) return undefined;
      await p.totp.setSecret(a.uid, secret);
      // Consume the step used to confirm, so the same code cannot log in again.
      await p.totp.verifyCode(a.uid, code, nowMs);
      const codes = newRecoveryCodes();
      await p.totp.setRecoveryCodes(a.uid, codes);
      return codes;
    },
    locked: async (key, source, nowMs) => {
      const l = await p.lockout.locked(key, source, nowMs);
      return l.uid || l.source;
    },
    failed: (key, source, nowMs) => p.lockout.fail(key, source, nowMs),
    lockedAttempt: (key, source, nowMs) => p.lockout.lockedAttempt(key, source, nowMs),
    succeeded: (key) => p.lockout.succeed(key),
    async rememberedFactor(a, keyFp, sourceNet, nowMs) {
      const r = p.remember;
      // Break-glass logins are always checked in full.
      if (!r || r.periodMs <= 0 || a.local) return undefined;
      const entry = await r.state.remembered(a.uid, keyFp, sourceNet, nowMs);
      return entry && rememberedValid(entry, { uid: a.uid, keyFp, sourceNet, totpBinding: bindingOf(a) }, nowMs, r.periodMs)
        ? entry
        : undefined;
    },
    async rememberFactor(a, keyFp, sourceNet, nowMs) {
      const r = p.remember;
      const binding = bindingOf(a);
      if (!r || r.periodMs <= 0 || a.local || binding === undefined) return undefined;
      const row = {
        uid: a.uid,
        keyFp,
        sourceNet,
        createdAtMs: nowMs,
        expiresAtMs: nowMs + Math.min(r.periodMs, REMEMBER_MAX_MS),
        totpBinding: binding,
      };
      await r.state.remember(row);
      return row;
    },
  };
}
