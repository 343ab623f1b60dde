/** Host names as `web.hostnames` and a `Host` header give them. */
import ipaddr from "ipaddr.js";

/** A DNS name: labels of letters, digits, `-` and `_`, separated by single dots (RFC 1123 §2.1, leniently). */
const DNS_NAME = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/**
 * The canonical form of a host name, for comparison: lower case, without the trailing dot of the
 * absolute form (`console.example.`), IPv6 without brackets and in its shortest form (RFC 5952, by ipaddr.js).
 * @returns undefined when `name` is neither a DNS name nor an IP address.
 */
export function canonicalHostName(name: string): string | undefined {
  let n = name.trim().toLowerCase();
  if (n.startsWith("[") && n.endsWith("]")) {
    n = n.slice(1, -1);
    return n.includes(":") && ipaddr.IPv6.isValid(n) ? ipaddr.IPv6.parse(n).toString() : undefined;
  }
  if (n.includes(":")) return ipaddr.IPv6.isValid(n) ? ipaddr.IPv6.parse(n).toString() : undefined;
  if (n.endsWith(".")) n = n.slice(0, -1);
  return DNS_NAME.test(n) ? n : undefined;
}
