/**
 * Jump-host mode (OpenSSH ProxyJump, `ssh -J uid@gateway user@host`): after a login without an
 * alias, the client opens a `direct-tcpip` channel (RFC 4254 §7.2) to the final host:port and
 * runs its own SSH session through it, end to end. The decision is one pure function: (policy,
 * identity, requested host and port) → the route and target that allow it, or a refusal.
 *
 * Matching is by name, never by DNS: the requested host must be the target's configured `host`
 * string (ASCII case-insensitive, as DNS names are, RFC 4343) or the target's name in `targets`,
 * and the port must be the target's `port`. The gateway then dials the configured `host`, never the
 * string the client sent. Resolving the requested name and comparing addresses is deliberately not
 * done: it would make the gateway look up names a user chooses (probing internal DNS), tie the
 * decision to whatever the resolver answers at that moment (a record an attacker can change, or
 * a rebinding answer between the check and the dial), and make the audit row name something other
 * than what was connected to.
 */
import { AuthenticatedIdentity } from "../auth/login.ts";
import type { Policy, PolicyRoute, PolicyTarget } from "../policy/index.ts";

export type JumpDecision =
  | {
      readonly allow: true;
      /** The first route in file order that grants this identity the target with `allow.jump`. */
      readonly route: PolicyRoute;
      readonly targetName: string;
      /** What the gateway dials: `target.host` and `target.port`, never the client's spelling. */
      readonly target: PolicyTarget;
    }
  | {
      readonly allow: false;
      /**
       * `invalid`: an empty host or a port outside 1–65535; `not_a_target`: no target this identity
       * may reach by some route has that host (or name) and port; `jump_not_allowed`: a route grants
       * that target but none of them with `allow.jump`.
       */
      readonly reason: "invalid" | "not_a_target" | "jump_not_allowed";
      /** The target matched, for `jump_not_allowed`. */
      readonly targetName?: string;
    };

function grants(route: PolicyRoute, id: AuthenticatedIdentity): boolean {
  return route.users.includes(id.uid) || route.groups.some((g) => id.groups.includes(g));
}

/** ASCII-only lower case: DNS names compare case-insensitively (RFC 4343); nothing else is folded. */
function asciiLower(s: string): string {
  return s.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

/** Whether a client's `host`:`port` names `target` (called `name`): its configured host string or its name, and its port. */
export function jumpHostMatches(name: string, target: PolicyTarget, host: string, port: number): boolean {
  if (port !== target.port) return false;
  return host === name || asciiLower(host) === asciiLower(target.host);
}

/**
 * Decides a `direct-tcpip` request of a connection logged in without an alias. Pure; never throws
 * for any host string or port number. Allowed only when some route in `policy.routes` names
 * `id` (by uid or one of its groups), has `allow.jump: true`, and its target matches `host`:`port`
 * per {@link jumpHostMatches}. A route without `jump` to the same target does not allow it; another
 * route with `jump` to the same target does, whatever else it allows.
 * @throws TypeError when `id` is not an {@link AuthenticatedIdentity} from a completed login.
 */
export function authorizeJump(policy: Policy, id: AuthenticatedIdentity, host: string, port: number): JumpDecision {
  if (!(id instanceof AuthenticatedIdentity)) throw new TypeError("authorizeJump needs an identity from a completed login");
  if (typeof host !== "string" || host.length === 0 || host.length > 255 || !Number.isInteger(port) || port < 1 || port > 65535)
    return { allow: false, reason: "invalid" };
  let withoutJump: string | undefined;
  for (const route of policy.routes) {
    if (!grants(route, id)) continue;
    const target = policy.targets[route.target];
    if (!target || !jumpHostMatches(route.target, target, host, port)) continue;
    if (route.allow.jump) return { allow: true, route, targetName: route.target, target };
    withoutJump ??= route.target;
  }
  return withoutJump === undefined
    ? { allow: false, reason: "not_a_target" }
    : { allow: false, reason: "jump_not_allowed", targetName: withoutJump };
}
