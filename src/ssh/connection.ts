/**
 * One downstream connection, start to end: the login (state machine in auth/login.ts through the
 * ssh2 adapter), the route decided for the identity it yields, the upstream dialled for an
 * approved target only, the channel handlers, the monitor, and the session row at the end.
 */
import { randomUUID } from "node:crypto";
import type { Connection, Client as UpstreamClient } from "ssh2";
import type { AuditSink } from "../audit/index.ts";
import { type AuthenticatedIdentity, type Authenticator, createLogin, displayAddress } from "../auth/index.ts";
import type { GatewayMetrics, Logger } from "../obs/index.ts";
import type { Policy } from "../policy/index.ts";
import { type ApprovedTarget, type RouteDecision, resolveRoute } from "../routing/index.ts";
import { relayAgent } from "./agent.ts";
import { adaptAuthentication } from "./auth.ts";
import type { ConnectionContext } from "./context.ts";
import { type ConnectionEvent, connectionEvents } from "./events.ts";
import { serveForwarding, serveRemoteForwards } from "./forwarding.ts";
import { createMonitor } from "./monitor.ts";
import { serveSession } from "./session.ts";
import { connectUpstream, HostKeyMismatchError, parseHostKeyLine } from "./upstream.ts";

/** Everything that a policy reload replaces at once; a connection keeps the one it started with. */
export interface GatewayRuntime {
  readonly policy: Policy;
  readonly authenticator: Authenticator;
  /** auth.uid_pattern, compiled. */
  readonly uidPattern: RegExp;
}

export interface ConnectionDeps {
  readonly runtime: () => GatewayRuntime;
  readonly egressKey: Buffer;
  readonly audit: AuditSink;
  readonly logger: Logger;
  readonly metrics: GatewayMetrics;
  readonly recordingsDir: () => string;
  readonly now: () => number;
}

/** What the gateway tracks of a live routed session (for reloads, stats and shutdown). */
export interface LiveSession {
  readonly identity: AuthenticatedIdentity;
  readonly alias: string | undefined;
  readonly targetName: string;
  /** The connection's event stream. */
  readonly emit: (e: ConnectionEvent) => void;
  end(why: string): void;
}

export interface ConnectionHooks {
  /** Authentication completed: the connection no longer counts against the pre-auth limits. */
  authenticated(): void;
  /** A routed session starts; returns false when `max_sessions` is reached. */
  sessionStarting(id: string, live: LiveSession): boolean;
  sessionEnded(id: string): void;
  closed(): void;
}

/** Serves one ssh2 connection. */
export function serveConnection(deps: ConnectionDeps, client: Connection, address: string, hooks: ConnectionHooks): void {
  const rt = deps.runtime();
  const limits = rt.policy.gateway.limits;
  const source = displayAddress(address);
  const connId = randomUUID();
  const log = deps.logger.child({ conn: connId, source });
  const emit = connectionEvents({ audit: deps.audit, log, metrics: deps.metrics, connId, source, now: deps.now });

  let terminated: string | undefined;
  let lastExit: number | null = null;
  let sessionStarted = false;
  let upstream: Promise<UpstreamClient> | undefined;
  let upstreamClient: UpstreamClient | undefined;
  let channelCounter = 0;
  const counters = { up: 0, down: 0 };
  const monitor = createMonitor({
    idleMs: limits.idle_timeout,
    maxChannels: limits.max_channels,
    now: deps.now,
    onIdle: () => {
      emit({ type: "closing", reason: "idle_timeout" });
      client.end();
    },
  });

  const login = createLogin({
    factors: rt.authenticator,
    chains: rt.policy.auth.chains,
    maxAttempts: limits.max_auth_attempts,
    uidPattern: rt.uidPattern,
    source: address,
    now: deps.now,
    emit,
  });
  let accepted: { identity: AuthenticatedIdentity; alias: string | undefined; account: string } | undefined;
  adaptAuthentication(client, login, log, (step) => {
    accepted = { identity: step.identity, alias: step.alias, account: step.account };
  });

  const openUpstream = (a: ApprovedTarget, ctx: ConnectionContext): Promise<UpstreamClient> => {
    const started = deps.now();
    return connectUpstream({
      name: a.targetName,
      host: a.target.host,
      port: a.target.port,
      username: a.login,
      privateKey: deps.egressKey,
      hostKey: parseHostKeyLine(a.target.host_key),
      timeoutMs: rt.policy.gateway.upstream_timeout,
      agent: a.route.allow.agent_forwarding ? relayAgent(client, () => ctx.agentRequested) : undefined,
    }).then(
      (c) => {
        emit({ type: "upstream_connected", target: a.targetName, ms: deps.now() - started });
        return c;
      },
      (err: Error) => {
        emit({
          type: "upstream_failed",
          uid: a.identity.uid,
          account: ctx.account,
          target: a.targetName,
          error: err.message,
          presented: err instanceof HostKeyMismatchError ? err.presented : undefined,
        });
        throw err;
      },
    );
  };

  client.on("ready", () => {
    hooks.authenticated();
    if (!accepted) return client.end();
    const { identity, alias, account } = accepted;
    const decision: RouteDecision = resolveRoute(deps.runtime().policy, identity, alias);
    const ctx: ConnectionContext = {
      client,
      connId,
      account,
      identity,
      decision,
      audit: deps.audit,
      recordingsDir: deps.recordingsDir,
      now: deps.now,
      emit,
      monitor,
      log,
      count: (dir, n) => {
        counters[dir] += n;
        monitor.activity();
      },
      get upstream() {
        return upstream;
      },
      upstreamClient: () => upstreamClient,
      terminate: (reason) => {
        terminated = reason;
        client.end();
      },
      setExit: (code) => {
        lastExit = code;
      },
      nextChannel: () => ++channelCounter,
      agentRequested: false,
    };
    monitor.start();
    if (decision.kind === "refused") {
      emit({ type: "route_refused", uid: identity.uid, account, reason: decision.reason, aliases: decision.aliases });
    } else {
      const a = decision.approved;
      const live: LiveSession = { identity, alias, targetName: a.targetName, emit, end: (why) => ctx.terminate(why) };
      if (!hooks.sessionStarting(connId, live)) {
        emit({ type: "closing", reason: "max_sessions" });
        return client.end();
      }
      sessionStarted = true;
      deps.audit.startSession({ id: connId, uid: identity.uid, account, target: a.targetName, source });
      upstream = openUpstream(a, ctx);
      upstream.then(
        (c) => {
          upstreamClient = c;
          c.on("close", () => client.end());
          serveRemoteForwards(ctx, c);
        },
        () => undefined,
      );
    }
    client.on("session", (acceptSession, rejectSession) => {
      if (!monitor.openChannel()) {
        emit({ type: "channel_refused", uid: identity.uid, data: { kind: "session", reason: "max_channels" } });
        return rejectSession();
      }
      serveSession(ctx, acceptSession(), () => monitor.closeChannel());
    });
    serveForwarding(ctx);
  });

  client.on("error", (err) => log.debug({ err: err.message }, "downstream error"));
  client.on("close", () => {
    login.abandon();
    monitor.stop();
    hooks.closed();
    upstream?.then(
      (c) => c.end(),
      () => undefined,
    );
    if (sessionStarted) {
      hooks.sessionEnded(connId);
      let result = "ok";
      if (!upstreamClient) result = "upstream_failed";
      if (terminated) result = "terminated";
      deps.audit.endSession(connId, { result, upBytes: counters.up, downBytes: counters.down, exitStatus: lastExit });
      log.info({ up: counters.up, down: counters.down, exit_status: lastExit }, "session ended");
    }
  });
}
