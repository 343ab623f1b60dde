/**
 * Source addresses as the lockout counts them and as logs show them.
 *
 * One IPv6 customer usually holds at least a /64 (RFC 6177 §2, RFC 7934 §6 hand out /64s per
 * host), so counting failures per IPv6 address would give one attacker 2^64 budgets: the lockout
 * counts per /64. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2, what a
 * dual-stack Node socket reports for IPv4 peers) is the IPv4 address it carries.
 */
import ipaddr from "ipaddr.js";

/** Parses `address` as IPv6 (any spelling ipaddr.js accepts, zone id included), else undefined. */
function parseV6(address: string): ipaddr.IPv6 | undefined {
  if (!ipaddr.IPv6.isValid(address)) return undefined;
  try {
    return ipaddr.IPv6.parse(address);
  } catch {
    return undefined;
  }
}

/**
 * The key failures are counted under for a peer address (Node's `socket.remoteAddress` shape).
 *
 * - `::ffff:a.b.c.d` in any spelling (`::FFFF:1.2.3.4`, `::ffff:102:304`) → `a.b.c.d`;
 * - IPv4 → as is;
 * - IPv6 → its /64 in lower-case compressed form (RFC 5952 §4), e.g. `2001:db8:1:2::/64`; a zone
 *   id stays, before the prefix length (RFC 4007 §11.7): `fe80::%eth0/64`, since link-local
 *   networks on two interfaces are different networks;
 * - anything else (unparsable) → as is.
 *
 * Never throws.
 */
export function sourceKey(address: string): string {
  const v6 = parseV6(address);
  if (!v6) return address;
  if (v6.isIPv4MappedAddress()) return v6.toIPv4Address().toString();
  const parts = v6.parts.slice(0, 4).concat([0, 0, 0, 0]);
  const net = new ipaddr.IPv6(parts).toString();
  return `${net}${v6.zoneId ? `%${v6.zoneId}` : ""}/64`;
}

/**
 * The address to show in logs and audit rows: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
 * any spelling) becomes `a.b.c.d`; every other string comes back unchanged. Never throws.
 */
export function displayAddress(address: string): string {
  const v6 = parseV6(address);
  return v6?.isIPv4MappedAddress() ? v6.toIPv4Address().toString() : address;
}
