/**
 * The client address of a web request that came through reverse proxies the policy trusts
 * (`web.trusted_proxies`), from `X-Forwarded-For` (the de facto header nginx, HAProxy, Caddy and
 * Traefik append to; MDN "X-Forwarded-For"). Each proxy appends the address it received the request
 * from, so the header is read from the right: the first address that is not a trusted proxy is the
 * client's; anything left of it was written by the client and is never believed. Pure.
 */
import ipaddr from "ipaddr.js";
import { insideAny } from "../policy/index.ts";

/**
 * An address in canonical form (IPv4-mapped IPv6 as IPv4), or undefined when it is not one. A port
 * some proxies append (`192.0.2.1:5678`, `[2001:db8::1]:443`) is dropped.
 */
function canonical(text: string): string | undefined {
  let t = text.trim();
  const withPort = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(t) ?? /^\[([0-9a-fA-F:.]+)\](?::\d{1,5})?$/.exec(t);
  if (withPort?.[1]) t = withPort[1];
  // Four-part decimal only: ipaddr.isValid also takes `127.1` and hex forms, which no proxy writes.
  return ipaddr.IPv4.isValidFourPartDecimal(t) || ipaddr.IPv6.isValid(t) ? ipaddr.process(t).toString() : undefined;
}

/**
 * @param peer the TCP peer's address (`socket.remoteAddress`)
 * @param forwardedFor the `X-Forwarded-For` header (Node joins several with ", ")
 * @param trusted `web.trusted_proxies`: addresses or CIDRs
 * @returns the address to audit and to count lockouts per source for: `peer` unless it is a trusted
 *   proxy; then the rightmost untrusted address of the header. A missing or malformed entry stops the
 *   walk at the last trusted hop (that proxy's address), so a broken header never names someone else.
 */
export function clientAddress(peer: string, forwardedFor: string | undefined, trusted: readonly string[]): string {
  const own = canonical(peer);
  // The policy only admits entries ipaddr.js reads; should one still throw, trust nobody rather than fail the request.
  const isTrusted = (a: string) => {
    try {
      return insideAny(a, trusted);
    } catch {
      return false;
    }
  };
  if (own === undefined || trusted.length === 0 || !isTrusted(own)) return own ?? peer;
  let client = own;
  const hops = (forwardedFor ?? "").split(",");
  for (let i = hops.length - 1; i >= 0; i--) {
    const a = canonical(hops[i] ?? "");
    if (a === undefined) return client;
    client = a;
    if (!isTrusted(a)) return a;
  }
  return client;
}
