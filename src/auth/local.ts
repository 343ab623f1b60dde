/**
 * Break-glass local users (`directory.local_users`): argon2id password hashes (argon2), the TOTP
 * factor still required. An unknown local uid is checked against a dummy hash so it costs the same.
 */
import argon2 from "argon2";

export interface LocalUser {
  readonly uid: string;
  readonly passwordHash: string;
  readonly groups: readonly string[];
}

export interface LocalUsers {
  has(uid: string): boolean;
  /**
   * The configured uid a typed name refers to, compared case-insensitively like a directory's
   * `uid` (caseIgnoreMatch, RFC 4519 §2.39): `Admin.Local` → `admin.local`. Undefined if none.
   */
  canonical(typed: string): string | undefined;
  /** Verifies a password; unknown users and wrong passwords both give undefined (after similar work). */
  verify(uid: string, password: string): Promise<{ groups: readonly string[] } | undefined>;
  groups(uid: string): readonly string[] | undefined;
}

/** Thrown at startup for a password_hash that is not argon2id. */
export class LocalUserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LocalUserError";
  }
}

export async function createLocalUsers(users: readonly LocalUser[]): Promise<LocalUsers> {
  for (const u of users) {
    if (!u.passwordHash.startsWith("$argon2id$")) {
      throw new LocalUserError(
        `directory.local_users[${u.uid}].password_hash must be an argon2id hash ($argon2id$…); make one with: varco user hash`,
      );
    }
  }
  const byUid = new Map(users.map((u) => [u.uid, u]));
  const byFolded = new Map(users.map((u) => [u.uid.normalize("NFC").toLowerCase(), u.uid]));
  const dummy = await argon2.hash(`varco-dummy-${Math.random()}`, { type: argon2.argon2id });
  return {
    has: (uid) => byUid.has(uid),
    canonical: (typed) => byFolded.get(typed.normalize("NFC").toLowerCase()),
    groups: (uid) => byUid.get(uid)?.groups,
    async verify(uid, password) {
      const u = byUid.get(uid);
      let ok = false;
      try {
        ok = await argon2.verify(u?.passwordHash ?? dummy, password);
      } catch {
        ok = false;
      }
      return u && ok && password.length > 0 ? { groups: u.groups } : undefined;
    },
  };
}

/** An argon2id hash for a password (for `varco user hash`). */
export function hashPassword(password: string): Promise<string> {
  return argon2.hash(password, { type: argon2.argon2id });
}
