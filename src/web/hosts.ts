/**
 * The web console's `Host` check (`web.hostnames`), a defence against DNS rebinding: a page of an
 * attacker's site whose name is made to resolve to the console's address is same-origin with itself,
 * so the browser of anyone on the console's network would carry its requests (password guessing
 * from inside, reading the login page) to the console. The browser still sends the attacker's name
 * in `Host` (RFC 9110 §7.2), which a console that knows its own names refuses with 421 Misdirected
 * Request (RFC 9110 §15.5.20). Pure functions; server.ts applies them to every request.
 */
import { canonicalHostName } from "../policy/index.ts";

const PORT = /^[0-9]{1,5}$/;

/**
 * The host name of a `Host` header value (`uri-host [ ":" port ]`, RFC 9110 §7.2), canonical as
 * `canonicalHostName` (src/policy/hostname.ts) gives it; the port is not part of the name (a reverse proxy may change it).
 * @returns undefined for an absent or malformed header (several values, userinfo, a bare IPv6 address, a bad port).
 */
export function hostNameOf(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const h = header.trim();
  let name: string;
  let port: string | undefined;
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    if (end < 0) return undefined;
    name = h.slice(0, end + 1);
    const rest = h.slice(end + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) return undefined;
      port = rest.slice(1);
    }
  } else {
    const parts = h.split(":");
    if (parts.length > 2) return undefined;
    name = parts[0] ?? "";
    port = parts[1];
  }
  if (port !== undefined && !PORT.test(port)) return undefined;
  return canonicalHostName(name);
}

/**
 * Whether a request with this `Host` header is for this console.
 * @param allowed canonical names (`web.hostnames`); empty: every request is (the check is off).
 */
export function hostAllowed(header: string | undefined, allowed: readonly string[]): boolean {
  if (allowed.length === 0) return true;
  const name = hostNameOf(header);
  return name !== undefined && allowed.includes(name);
}
