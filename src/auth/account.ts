/**
 * Account syntax (contract §1): the SSH user name is `<uid>_<alias>`, split at the last `_`. The
 * name is checked before anything else looks at it — before any directory call, lockout lookup or
 * audit row — so only names a directory could hold (and that cannot escape a path or a filter)
 * reach the rest of the login. The typed uid is never the identity: the directory entry's own
 * attribute is (see `Account.uid`).
 */

/** SSH user names longer than this (UTF-8 bytes) are refused unread and stored truncated. */
export const MAX_USERNAME_BYTES = 256;

/**
 * The default `auth.uid_pattern`: what POSIX and AD account names use (letters, digits, `.`, `_`,
 * `-`, `@`), starting with a letter or digit, at most 64 characters. Whitespace, control
 * characters, filter and path metacharacters are refused.
 */
export const DEFAULT_UID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$";

/** Aliases as the policy schema allows them. */
const ALIAS = /^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$/;

/** Splits an SSH user name at the last `_`: `mario.rossi_vm1` → uid `mario.rossi`, alias `vm1`. */
export function splitAccount(username: string): { uid: string; alias: string | undefined } {
  const i = username.lastIndexOf("_");
  if (i <= 0 || i === username.length - 1) return { uid: i === username.length - 1 ? username.slice(0, -1) : username, alias: undefined };
  return { uid: username.slice(0, i), alias: username.slice(i + 1) };
}

export type AccountSyntax =
  | { readonly ok: true; readonly uid: string; readonly alias: string | undefined }
  | { readonly ok: false; readonly reason: "account_too_long" | "account_syntax" };

/**
 * Checks a typed SSH user name: at most MAX_USERNAME_BYTES, Unicode NFC (a name that changes under
 * NFC is refused rather than silently rewritten), the uid part matching `uidPattern`, the alias part
 * (if any) letters, digits, `.` and `-`.
 */
export function checkAccountSyntax(username: string, uidPattern: RegExp): AccountSyntax {
  if (Buffer.byteLength(username, "utf8") > MAX_USERNAME_BYTES) return { ok: false, reason: "account_too_long" };
  if (username.normalize("NFC") !== username) return { ok: false, reason: "account_syntax" };
  const { uid, alias } = splitAccount(username);
  if (!uidPattern.test(uid)) return { ok: false, reason: "account_syntax" };
  if (alias !== undefined && !ALIAS.test(alias)) return { ok: false, reason: "account_syntax" };
  // A trailing "_" is not an alias; "name_" would otherwise be a second spelling of "name".
  if (username.endsWith("_")) return { ok: false, reason: "account_syntax" };
  return { ok: true, uid, alias };
}

/** `text` cut to at most `maxBytes` UTF-8 bytes (never splitting a character), for storing what was typed. */
export function truncateUtf8(text: string, maxBytes = MAX_USERNAME_BYTES): string {
  if (Buffer.byteLength(text, "utf8") <= maxBytes) return text;
  let out = "";
  let used = 0;
  for (const ch of text) {
    const n = Buffer.byteLength(ch, "utf8");
    if (used + n > maxBytes) break;
    out += ch;
    used += n;
  }
  return out;
}
