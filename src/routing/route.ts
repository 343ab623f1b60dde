/**
 * Routing is one pure function: (authenticated identity, requested alias, policy) → an approved
 * target, or a refusal listing the aliases this identity may use (and nothing about anyone else).
 */
import { AuthenticatedIdentity } from "../auth/login.ts";
import type { Policy, PolicyRoute, PolicyTarget } from "../policy/index.ts";

declare const approved: unique symbol;

/** Proof that a route grants this identity this target. Only `resolveRoute` creates one. */
export interface ApprovedTarget {
  readonly [approved]: true;
  readonly identity: AuthenticatedIdentity;
  readonly alias: string;
  readonly targetName: string;
  readonly target: PolicyTarget;
  readonly route: PolicyRoute;
  /** Login name on the target (the route's target `user`, else the uid). */
  readonly login: string;
}

export type RouteDecision =
  | { readonly kind: "approved"; readonly approved: ApprovedTarget }
  | { readonly kind: "refused"; readonly reason: "no_alias" | "no_route"; readonly aliases: readonly string[] };

/** Who a route is checked against: a canonical uid and its groups. */
export type RouteSubject = Pick<AuthenticatedIdentity, "uid" | "groups">;

function routeGrants(route: PolicyRoute, id: RouteSubject): boolean {
  return route.users.includes(id.uid) || route.groups.some((g) => id.groups.includes(g));
}

/** The aliases `id` may use, sorted, without duplicates. */
export function aliasesFor(policy: Policy, id: RouteSubject): string[] {
  return [...new Set(policy.routes.filter((r) => routeGrants(r, id)).map((r) => r.alias))].sort();
}

/**
 * The routes `id` may use, one per alias (the first in file order, as a login picks it), sorted by
 * alias: for listings (menus, `varco user ssh-config`), never for an authorization decision.
 */
export function routesFor(policy: Policy, id: RouteSubject): Array<{ alias: string; description: string | undefined; target: string }> {
  const seen = new Map<string, PolicyRoute>();
  for (const r of policy.routes) if (routeGrants(r, id) && !seen.has(r.alias)) seen.set(r.alias, r);
  return [...seen.values()]
    .map((r) => ({ alias: r.alias, description: r.description, target: r.target }))
    .sort((a, b) => (a.alias < b.alias ? -1 : a.alias > b.alias ? 1 : 0));
}

/** Decides where an authenticated identity asking for `alias` may go. Pure. */
export function resolveRoute(policy: Policy, id: AuthenticatedIdentity, alias: string | undefined): RouteDecision {
  if (!(id instanceof AuthenticatedIdentity)) throw new TypeError("resolveRoute needs an identity from a completed login");
  const aliases = aliasesFor(policy, id);
  if (alias === undefined) return { kind: "refused", reason: "no_alias", aliases };
  const route = policy.routes.find((r) => r.alias === alias && routeGrants(r, id));
  const target = route ? policy.targets[route.target] : undefined;
  if (!route || !target) return { kind: "refused", reason: "no_route", aliases };
  const ok = { identity: id, alias, targetName: route.target, target, route, login: target.user ?? id.uid };
  return { kind: "approved", approved: ok as unknown as ApprovedTarget };
}

/** Makes a user-supplied name safe to print on a terminal: control characters become '?'. */
function printable(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping control characters is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, "?").slice(0, 200);
}

/** The message a refused user sees (their own aliases only; the name they typed is sanitised). */
export function refusalMessage(username: string, uid: string, aliases: readonly string[]): string {
  username = printable(username);
  uid = printable(uid);
  if (aliases.length === 0) return `varco: ${uid} has no routes on this gateway. Contact an administrator.\r\n`;
  const list = aliases.map((a) => `  ${uid}_${a}`).join("\r\n");
  return `varco: "${username}" is not a route you may use. Log in as one of:\r\n${list}\r\n`;
}
