/** Host names as `web.hostnames` and a `Host` header give them. */
import { domainToASCII } from "node:url";
import ipaddr from "ipaddr.js";

/** A DNS name: labels of letters, digits, `-` and `_`, separated by single dots (RFC 1123 §2.1, leniently). */
const DNS_NAME = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;
/** A last label that makes a browser read the whole host as an IPv4 address (WHATWG URL "ends in a number"). */
const NUMERIC_LABEL = /(?:^|\.)(?:0x[0-9a-f]*|[0-9]+)$/;

/**
 * The canonical form of a host name, for comparison: lower case, without the trailing dot of the
 * absolute form (`console.example.`), IPv6 without brackets and in its shortest form (RFC 5952, by
 * ipaddr.js). Printable ASCII only (a `Host` header carries the `xn--` form of an international name;
 * see {@link policyHostName}); an IPv4 address only in four-part decimal (a browser sends `127.1` or
 * `0x7f.0.0.1` as `127.0.0.1`); no IPv6 zone id (never in a URL's host).
 * @returns undefined when `name` is none of these.
 */
export function canonicalHostName(name: string): string | undefined {
  const t = name.trim();
  if (!/^[\x21-\x7e]+$/.test(t) || t.includes("%")) return undefined;
  let n = t.toLowerCase();
  if (n.startsWith("[") && n.endsWith("]")) {
    n = n.slice(1, -1);
    return n.includes(":") && ipaddr.IPv6.isValid(n) ? ipaddr.IPv6.parse(n).toString() : undefined;
  }
  if (n.includes(":")) return ipaddr.IPv6.isValid(n) ? ipaddr.IPv6.parse(n).toString() : undefined;
  if (n.endsWith(".")) n = n.slice(0, -1);
  if (NUMERIC_LABEL.test(n)) return ipaddr.IPv4.isValidFourPartDecimal(n) ? ipaddr.IPv4.parse(n).toString() : undefined;
  return DNS_NAME.test(n) ? n : undefined;
}

/**
 * A host name as written in a policy: an international name becomes its `xn--` form (UTS #46, as
 * browsers map it, by `url.domainToASCII`), then {@link canonicalHostName}.
 */
export function policyHostName(name: string): string | undefined {
  const ascii = /[^\x20-\x7e]/.test(name) ? domainToASCII(name.trim()) : name;
  return ascii === "" ? undefined : canonicalHostName(ascii);
}
