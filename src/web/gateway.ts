/**
 * Wiring of the web console into the gateway process (called by src/main.ts): the read side of
 * the audit (the store's rows, a query connection for lists and search), the gateway's live
 * sessions, the lockout, the login runtime in force.
 */
import type { AuditStore } from "../audit/index.ts";
import type { Logger } from "../obs/index.ts";
import type { Policy } from "../policy/index.ts";
import { playerAssets } from "./assets.ts";
import type { WebLoginRuntime, WebSettings } from "./auth.ts";
import { startWebConsole, type WebListener } from "./listen.ts";
import { startMirrors } from "./mirrors.ts";
import { openWebAuditRead } from "./read.ts";
import type { LiveControl } from "./server.ts";

export interface WebGatewayOptions {
  readonly listen: { host: string; port: number };
  /** PEM files, resolved against the policy file. */
  readonly tls?: { certFile: string; keyFile: string } | undefined;
  /** The policy in force (its `web` block is read per request). */
  readonly policy: () => Policy;
  readonly runtime: () => WebLoginRuntime;
  readonly audit: AuditStore;
  /** The audit database file (a read connection of its own for lists and search). */
  readonly auditDb: string;
  readonly live: LiveControl;
  readonly unlock: (typedUid: string) => Promise<{ uid: string; forgotten: number }>;
  readonly logger: Logger;
  /**
   * A PostgreSQL state: the console also shows every other node's sessions, read from local mirrors
   * in `dir` (`<state_dir>/mirror`) kept up to date from `url` by a worker thread. `node` is this gateway's name.
   */
  readonly mirror?: { url: string; dir: string; node: string; intervalMs?: number } | undefined;
}

/** Starts the console for a running gateway. @throws Error when the listener cannot be bound or the TLS files read. */
export async function startWebForGateway(o: WebGatewayOptions): Promise<WebListener> {
  const mirrors = o.mirror
    ? startMirrors({
        url: o.mirror.url,
        dir: o.mirror.dir,
        self: o.mirror.node,
        ...(o.mirror.intervalMs ? { intervalMs: o.mirror.intervalMs } : {}),
        onError: (message) =>
          o.logger.warn({ err: message }, "web console: the other nodes' mirrors could not be refreshed (showing the last ones)"),
      })
    : undefined;
  const reader = openWebAuditRead(
    o.audit,
    o.auditDb,
    mirrors && o.mirror ? { mirrors: { self: o.mirror.node, states: () => mirrors.states() } } : {},
  );
  let last: WebSettings | undefined;
  const settings = (): WebSettings => {
    const w = o.policy().web;
    // A reload that removed the block keeps the last one until the restart it needs.
    if (w)
      last = {
        auditor_groups: w.auditor_groups,
        admin_groups: w.admin_groups,
        idle_timeout: w.idle_timeout,
        hostnames: w.hostnames,
        trusted_proxies: w.trusted_proxies,
      };
    return last ?? { auditor_groups: [], admin_groups: [], idle_timeout: 0, hostnames: [], trusted_proxies: [] };
  };
  try {
    const listener = await startWebConsole(
      { host: o.listen.host, port: o.listen.port, tls: o.tls },
      {
        settings,
        runtime: o.runtime,
        audit: (e) => o.audit.append(e),
        read: reader.read,
        live: o.live,
        unlock: o.unlock,
        player: playerAssets(),
        now: () => Date.now(),
        logger: o.logger,
        transferOf: reader.transferOf,
      },
    );
    return {
      address: listener.address,
      close: async () => {
        await listener.close();
        await mirrors?.close();
        await reader.close();
      },
    };
  } catch (err) {
    await mirrors?.close();
    await reader.close();
    throw err;
  }
}
