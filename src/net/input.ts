/**
 * The input chain: what the gateway itself accepts on its public side. Pure, no I/O.
 */
import type { NetworkPolicy } from "../policy/index.ts";

/** A `host:port` the gateway listens on (host `0.0.0.0` / `::` = every address). */
export interface ServiceAddress {
  readonly host: string;
  readonly port: number;
}

/** The gateway's own listeners, from `gateway.listen` and `gateway.metrics_listen`. */
export interface GatewayServices {
  readonly listen: readonly ServiceAddress[];
  readonly metrics?: ServiceAddress | undefined;
}

/** Lines of `chain input { … }` inside varco's table (none yet). */
export function renderInputChain(_n: NetworkPolicy, _services: GatewayServices | undefined): string[] {
  return [];
}
