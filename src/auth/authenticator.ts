/**
 * The factors a login chain is made of, behind one narrow interface the SSH server calls.
 * Each check answers a verdict; none tells the client which factor failed (the server sends one
 * generic refusal), but the verdict's `reason` goes to the log and audit for administrators.
 */
import { type Directory, DirectoryUnavailableError } from "./ldap.ts";
import type { TotpStore } from "./totp.ts";

export type PasswordVerdict =
  | { readonly kind: "ok"; readonly groups: readonly string[] }
  | { readonly kind: "invalid" }
  | { readonly kind: "unavailable"; readonly reason: string };

export interface Authenticator {
  /** Checks a directory password. Never throws. */
  password(uid: string, password: string): Promise<PasswordVerdict>;
  /** Checks and consumes a TOTP code at `nowMs`. Never throws. */
  totp(uid: string, code: string, nowMs: number): Promise<boolean>;
}

/** Composes a directory and a TOTP store into an Authenticator. */
export function createAuthenticator(directory: Directory, totp: TotpStore): Authenticator {
  return {
    async password(uid, password) {
      try {
        const v = await directory.verifyPassword(uid, password);
        return v.kind === "ok" ? { kind: "ok", groups: v.groups } : { kind: "invalid" };
      } catch (err) {
        const reason = err instanceof DirectoryUnavailableError ? err.message : `directory error: ${(err as Error).message}`;
        return { kind: "unavailable", reason };
      }
    },
    async totp(uid, code, nowMs) {
      try {
        return await totp.verifyCode(uid, code, nowMs);
      } catch {
        return false;
      }
    },
  };
}
