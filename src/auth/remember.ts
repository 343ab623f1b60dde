/**
 * A remembered second factor (`auth.totp.remember`): after a full login through a chain holding
 * both `publickey` and `totp`, the same canonical uid with the same public key from the same
 * source network completes that chain without the code until the entry expires.
 *
 * What is remembered is (uid, SHA-256 fingerprint of the public key that authenticated, source
 * network); the key is still checked on every login (a remembered entry only ever stands in for
 * the `totp` factor of a chain that also holds `publickey`). The source network is an IPv4 /24 or
 * an IPv6 /64 (RFC 6177 §2: one site's hosts share a /64; a /24 is one office or home NAT pool).
 *
 * An entry is also bound to the TOTP secret it stands in for ({@link LOCAL_TOTP_BINDING},
 * {@link import("./totp.ts").directorySecretBinding}): a secret
 * replaced in the directory (`auth.totp.secrets: ldap`, where varco never sees the change happen)
 * or removed from it voids every entry of the user, as a local re-enrolment deletes them.
 *
 * The decisions here are pure; storage is the login state ({@link AuthState.remember}).
 */
import { createHash } from "node:crypto";
import ipaddr from "ipaddr.js";
import type { AuthMethod } from "../policy/index.ts";
import type { RememberedRow } from "../state/index.ts";
import { sourceKey } from "./source.ts";

/**
 * The longest `auth.totp.remember` accepted: 24 hours. NIST SP 800-63B (rev. 4, AAL2) asks for a
 * reauthentication at least once per 24 hours of use; a longer period would let a stolen key log in
 * from the victim's office network for days without the second factor.
 */
export const REMEMBER_MAX_MS = 24 * 3600_000;

/**
 * The OpenSSH fingerprint of a public key blob (RFC 4253 §6.6 wire form): `SHA256:` and the
 * unpadded base64 of its SHA-256, as `ssh-keygen -l -E sha256` prints it.
 */
export function keyFingerprint(blob: Buffer): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/**
 * The source network a remembered factor is bound to, for a peer address as Node reports it
 * (`socket.remoteAddress`):
 * - IPv4, or IPv4-mapped IPv6 in any spelling (RFC 4291 §2.5.5.2) → its /24: `192.0.2.0/24`;
 * - IPv6 → its /64 as {@link sourceKey} writes it: `2001:db8:1:2::/64` (a zone id stays);
 * - anything unparsable → undefined: nothing is remembered for it, nothing is skipped.
 * Never throws.
 */
export function rememberNetwork(address: string): string | undefined {
  const key = sourceKey(address);
  if (key.endsWith("/64")) return key;
  if (!ipaddr.IPv4.isValidFourPartDecimal(key)) return undefined;
  const parts = ipaddr.IPv4.parse(key).octets;
  return `${parts[0]}.${parts[1]}.${parts[2]}.0/24`;
}

/**
 * The binding of remembered entries when the TOTP secret lives in the login state (its re-enrolment
 * or reset deletes the entries in the same transaction). For a secret read from the directory the
 * binding is {@link import("./totp.ts").directorySecretBinding}.
 */
export const LOCAL_TOTP_BINDING = "local";

/** Whether a chain may have its `totp` factor stood in for by a remembered entry: it holds `publickey` and `totp`. */
export function chainRemembers(chain: readonly AuthMethod[]): boolean {
  return chain.includes("publickey") && chain.includes("totp");
}

/**
 * Whether `entry` lets (uid, key, network) skip the code at `nowMs` with the current
 * `auth.totp.remember` of `periodMs` (0 = off): it must be unexpired, and not older than the
 * current period either (shortening the period in a reload shortens every stored entry; turning
 * it off honours none). Every field must match exactly, the TOTP binding included (an entry bound
 * to nothing, `""`, never matches).
 */
export function rememberedValid(
  entry: RememberedRow | undefined,
  want: { readonly uid: string; readonly keyFp: string; readonly sourceNet: string; readonly totpBinding: string | undefined },
  nowMs: number,
  periodMs: number,
): boolean {
  if (!entry || periodMs <= 0) return false;
  if (entry.uid !== want.uid || entry.keyFp !== want.keyFp || entry.sourceNet !== want.sourceNet) return false;
  if (!want.totpBinding || entry.totpBinding !== want.totpBinding) return false;
  return entry.createdAtMs <= nowMs && nowMs < entry.expiresAtMs && nowMs < entry.createdAtMs + Math.min(periodMs, REMEMBER_MAX_MS);
}
