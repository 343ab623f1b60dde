/**
 * The downstream SSH server (ssh2 `Server`): listeners, pre-auth limits at the TCP level, and the
 * registry of live sessions. Each connection is served by `serveConnection` (connection.ts): login
 * state machine → route → upstream → channels.
 */
import { type AddressInfo, createServer, type Server as NetServer, type Socket } from "node:net";
import ssh2, { type Connection, type Server as SshServer } from "ssh2";
import type { AuditSink } from "../audit/index.ts";
import { sourceKey } from "../auth/index.ts";
import { type GatewayMetrics, type Logger, NO_METRICS, printable } from "../obs/index.ts";
import { parseHostPort } from "../policy/index.ts";
import { resolveRoute } from "../routing/index.ts";
import { CHANNELS_END_WAIT_MS, type GatewayRuntime, type LiveSession, serveConnection } from "./connection.ts";
import { assertSsh2Patched, connectionSocket } from "./ssh2-internals.ts";

export { CODE_PROMPT, PASSWORD_PROMPT } from "../auth/index.ts";
export { HOST_KEY_CHANGED_MESSAGE, TARGET_UNREACHABLE_MESSAGE } from "./session.ts";

/** Everything the gateway needs, injected by the composition root. */
export interface GatewayDeps {
  /** The runtime in force (policy + authenticator); read at each new connection so a reload applies to new logins. */
  readonly runtime: () => GatewayRuntime;
  readonly hostKeys: readonly Buffer[];
  readonly egressKey: Buffer;
  readonly audit: AuditSink;
  readonly logger: Logger;
  /** The recordings folder (`gateway.recordings_dir`, read per channel so a reload applies). */
  readonly recordingsDir: () => string;
  /** Counters and histograms (prom-client in production; no-op when absent). */
  readonly metrics?: GatewayMetrics;
  /** Clock, ms since epoch (injectable for tests of TOTP windows and timeouts). */
  readonly now: () => number;
}

export interface Gateway {
  /** Starts listening; resolves with the bound addresses. */
  listen(addresses: readonly string[]): Promise<AddressInfo[]>;
  /**
   * Stops accepting, lets sessions finish for up to `drainMs` (ms), then ends the rest.
   * Resolves once every connection's close handler (session_end row) ran: a peer is cut 1 s after the
   * DISCONNECT, and its session's channels get CHANNELS_END_WAIT_MS + 1 s more (at most 5 s in all).
   */
  close(drainMs?: number): Promise<void>;
  /**
   * The runtime was swapped: sessions whose route no longer grants their target are audited and,
   * with `gateway.on_route_removed: terminate`, closed. Returns how many sessions were affected.
   */
  policyChanged(): number;
  /** Live counts, for health and metrics. */
  stats(): { connections: number; unauthenticated: number; sessions: number };
  /** The routed sessions (and jump tunnels) running now, for the web console's live page. */
  liveSessions(): LiveSessionInfo[];
  /**
   * Ends a running session for an administrator: its user is told why on every open session
   * channel (stderr), `session_terminated` is audited with the administrator's uid, then the
   * connection closes (its session_end says `terminated`). Returns false when no such session runs.
   * @throws AuditWriteError when the event cannot be written (nothing is ended then).
   */
  terminate(id: string, byUid: string, reason: string): boolean;
}

/** A running session as {@link Gateway.liveSessions} lists it; bytes: up = user → target, down = target → user. */
export interface LiveSessionInfo {
  readonly id: string;
  readonly uid: string;
  readonly account: string;
  readonly target: string;
  readonly source: string;
  /** ms since the epoch. */
  readonly startedAt: number;
  readonly upBytes: number;
  readonly downBytes: number;
}

/** After a stop's DISCONNECT, how long a peer gets to close its side before its socket is destroyed (ms). */
const CLOSE_GRACE_MS = 1000;
/** How long the user's channels get to show the reason before the connection closes (ms). */
const TERMINATE_NOTICE_MS = 300;

/** Creates the gateway. Call `listen()` to start. @throws Ssh2PatchError when ssh2 lacks varco's patch. */
export function createGateway(deps: GatewayDeps): Gateway {
  // The relay's throughput depends on varco's ssh2 patch (and the internals it uses on ssh2 1.17.0).
  assertSsh2Patched();
  const servers: NetServer[] = [];
  const connections = new Set<Connection>();
  const metrics = deps.metrics ?? NO_METRICS;
  let unauthenticated = 0;
  /** Unauthenticated connections per source key (an IPv6 /64 counts as one source). */
  const unauthBySource = new Map<string, number>();
  /** Sockets still logging in, by remote address:port → how to leave the pre-auth count. */
  const preAuth = new Map<string, () => void>();
  /** Live routed sessions, for reloads, limits and shutdown. */
  const live = new Map<string, LiveSession>();

  /**
   * Pre-auth limits at the TCP level, before ssh2 sees a byte: ssh2 only reports a connection once
   * the client sent its identification line, so a slow-loris that never does must be counted and
   * timed out here (gateway.limits: max_unauthenticated, max_unauthenticated_per_source, login_grace).
   */
  const guardSocket = (socket: Socket, ssh: SshServer) => {
    const limits = deps.runtime().policy.gateway.limits;
    const address = socket.remoteAddress ?? "?";
    const source = sourceKey(address);
    const key = `${address}|${socket.remotePort}`;
    const perSource = (unauthBySource.get(source) ?? 0) + 1;
    if (unauthenticated + 1 > limits.max_unauthenticated || perSource > limits.max_unauthenticated_per_source) {
      deps.logger.warn({ source, unauthenticated, perSource }, "too many unauthenticated connections; dropping");
      socket.destroy();
      return;
    }
    unauthenticated += 1;
    unauthBySource.set(source, perSource);
    let done = false;
    const leave = () => {
      if (done) return;
      done = true;
      clearTimeout(grace);
      preAuth.delete(key);
      unauthenticated -= 1;
      const n = (unauthBySource.get(source) ?? 1) - 1;
      if (n <= 0) unauthBySource.delete(source);
      else unauthBySource.set(source, n);
    };
    const grace = setTimeout(() => {
      deps.logger.info({ source }, "login_grace expired before authentication; closing");
      leave();
      socket.destroy();
    }, limits.login_grace);
    grace.unref();
    preAuth.set(key, leave);
    socket.once("close", leave);
    // No Nagle: SFTP and interactive sessions are request/response; OpenSSH sets TCP_NODELAY too.
    socket.setNoDelay(true);
    ssh.injectSocket(socket);
  };

  const onConnection = (client: Connection, info: { ip: string; port: number }) => {
    connections.add(client);
    const leaveUnauth = () => preAuth.get(`${info.ip}|${info.port}`)?.();
    serveConnection(
      {
        runtime: deps.runtime,
        egressKey: deps.egressKey,
        audit: deps.audit,
        logger: deps.logger,
        metrics,
        recordingsDir: deps.recordingsDir,
        now: deps.now,
        hostKeys: deps.hostKeys,
      },
      client,
      info.ip,
      {
        authenticated: leaveUnauth,
        sessionStarting: (id, s) => {
          if (live.size >= deps.runtime().policy.gateway.limits.max_sessions) return false;
          live.set(id, s);
          return true;
        },
        sessionEnded: (id) => live.delete(id),
        closed: () => {
          leaveUnauth();
          connections.delete(client);
        },
      },
    );
  };

  return {
    async listen(addresses) {
      const bound: AddressInfo[] = [];
      for (const a of addresses) {
        const hp = parseHostPort(a);
        if (!hp) throw new Error(`not a host:port: ${a}`);
        const { host, port } = hp;
        // The policy's banner is sent before authentication (RFC 4252 §5.4, SSH_MSG_USERAUTH_BANNER).
        const banner = deps.runtime().policy.gateway.banner;
        const ssh = new ssh2.Server({ hostKeys: [...deps.hostKeys], ident: "varco", ...(banner ? { banner } : {}) }, onConnection);
        const server = createServer((socket) => guardSocket(socket, ssh));
        servers.push(server);
        await new Promise<void>((resolve, reject) => {
          server.once("error", reject);
          server.listen(port, host, () => {
            server.off("error", reject);
            // An accept error (other than EMFILE, which libuv absorbs) must not end the process: logged.
            server.on("error", (err) => deps.logger.error({ err: err.message, listen: a }, "SSH listener error"));
            resolve();
          });
        });
        bound.push(server.address() as AddressInfo);
      }
      return bound;
    },
    policyChanged() {
      const policy = deps.runtime().policy;
      let affected = 0;
      for (const s of live.values()) {
        if (s.stillAllowed) {
          if (s.stillAllowed(policy)) continue;
        } else {
          const d = resolveRoute(policy, s.identity, s.alias);
          if (d.kind === "approved" && d.approved.targetName === s.targetName) continue;
        }
        affected += 1;
        const action = policy.gateway.on_route_removed;
        s.emit({ type: "route_removed", uid: s.identity.uid, target: s.targetName, action });
        if (action === "terminate") s.end("route_removed");
      }
      return affected;
    },
    async close(drainMs = 0) {
      const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      // Graceful: let routed sessions finish on their own, bounded by drainMs.
      for (let waited = 0; waited < drainMs && live.size > 0; waited += 100) await new Promise((r) => setTimeout(r, 100));
      for (const c of connections) c.end();
      // A peer that has not closed its side 1 s after the DISCONNECT is cut, so every close handler runs in time.
      for (let i = 0; i < CLOSE_GRACE_MS / 50 && connections.size > 0; i++) await new Promise((r) => setTimeout(r, 50));
      for (const c of connections) connectionSocket(c)?.destroy();
      // Then each close handler writes session_end once its channels have ended (bounded by
      // CHANNELS_END_WAIT_MS); the connection leaves `connections` after that write.
      for (let i = 0; i < (CHANNELS_END_WAIT_MS + 1000) / 50 && connections.size > 0; i++) await new Promise((r) => setTimeout(r, 50));
      await closed;
    },
    stats: () => ({ connections: connections.size, unauthenticated, sessions: live.size }),
    liveSessions: () =>
      [...live].map(([id, s]) => {
        const b = s.bytes?.() ?? { up: 0, down: 0 };
        return {
          id,
          uid: s.identity.uid,
          account: s.account ?? "",
          target: s.targetName,
          source: s.source ?? "",
          startedAt: s.startedAt ?? 0,
          upBytes: b.up,
          downBytes: b.down,
        };
      }),
    terminate(id, byUid, reason) {
      const s = live.get(id);
      if (!s) return false;
      deps.audit.append({
        type: "session_terminated",
        sessionId: id,
        uid: byUid,
        target: s.targetName,
        result: "ok",
        data: { by: byUid, user: s.identity.uid, reason },
      });
      deps.logger.warn({ session: id, by: byUid, user: s.identity.uid }, "session ended by an administrator");
      s.tell?.(`\r\nvarco: this session was ended by an administrator (${byUid}): ${printable(reason, 200)}\r\n`);
      setTimeout(() => s.end("terminated"), TERMINATE_NOTICE_MS).unref();
      return true;
    },
  };
}
