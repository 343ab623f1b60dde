/**
 * One downstream connection, start to end: the login (state machine in auth/login.ts through the
 * ssh2 adapter), the route decided for the identity it yields, the upstream dialled for an
 * approved target only, the channel handlers, the monitor, and the session row at the end.
 */
import { randomUUID } from "node:crypto";
import ssh2, { type Connection, type Session, type Client as UpstreamClient } from "ssh2";
import type { AuditSink } from "../audit/index.ts";
import { type AuditHealth, AuditWriteError } from "../audit/store.ts";
import { type AuthenticatedIdentity, type Authenticator, createLogin, displayAddress } from "../auth/index.ts";
import { type GatewayMetrics, type Logger, printable } from "../obs/index.ts";
import { type Policy, parseHostPort } from "../policy/index.ts";
import { type ApprovedTarget, type RouteDecision, refusalMessage, renderSshConfig, resolveRoute, routesFor } from "../routing/index.ts";
import { relayAgent } from "./agent.ts";
import { adaptAuthentication } from "./auth.ts";
import type { ConnectionContext } from "./context.ts";
import { type ConnectionEvent, connectionEvents } from "./events.ts";
import { serveForwarding, serveRemoteForwards } from "./forwarding.ts";
import { createMonitor } from "./monitor.ts";
import { writeStderr } from "./relay.ts";
import { AUDIT_UNAVAILABLE_MESSAGE, type NoAliasOptions, serveAuditRefusal, serveSession } from "./session.ts";
import { acceptedChannel, connectionSocket } from "./ssh2-internals.ts";
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
  /** The gateway's host private keys (their public halves go into `ssh uid@gateway ssh-config`). */
  readonly hostKeys?: readonly Buffer[] | undefined;
}

/** `ssh-ed25519 AAAA…` lines of the public halves of `keys` (unparsable keys are skipped). */
export function publicKeyLines(keys: readonly Buffer[]): string[] {
  return keys.flatMap((k) => {
    const parsed = ssh2.utils.parseKey(k);
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    if (!key || key instanceof Error) return [];
    return [`${key.type} ${key.getPublicSSH().toString("base64")}`];
  });
}

/** What the gateway tracks of a live routed session (for reloads, stats and shutdown). */
export interface LiveSession {
  readonly identity: AuthenticatedIdentity;
  readonly alias: string | undefined;
  readonly targetName: string;
  /** The connection's event stream. */
  readonly emit: (e: ConnectionEvent) => void;
  end(why: string): void;
  /**
   * Whether the policy in force still allows it (default: the route of `alias` still leads to
   * `targetName`). Jump tunnels ask `authorizeJump` again.
   */
  stillAllowed?(policy: Policy): boolean;
  /** When it started (ms since the epoch), the account typed, the client's address: for the live list. */
  readonly startedAt?: number;
  readonly account?: string;
  readonly source?: string;
  /** Bytes relayed so far: up = user → target, down = target → user. */
  bytes?(): { up: number; down: number };
  /** Writes `message` (already printable) to the stderr of every open session channel. */
  tell?(message: string): void;
}

export interface ConnectionHooks {
  /** Authentication completed: the connection no longer counts against the pre-auth limits. */
  authenticated(): void;
  /** A routed session starts; returns false when `max_sessions` is reached. */
  sessionStarting(id: string, live: LiveSession): boolean;
  sessionEnded(id: string): void;
  closed(): void;
}

/** The audit as one connection writes it: the store's calls, with write failures remembered. */
export interface ConnectionAudit extends AuditSink {
  /** The first write of this connection the database refused, if any. */
  failure(): AuditWriteError | undefined;
}

/**
 * Wraps `sink` for one connection: an {@link AuditWriteError} from any call is caught, remembered
 * and passed to `onFailure` (each time), never thrown into the ssh2 handlers, the login state
 * machine or the channel audit (an exception there would end the process). Callers that must not go
 * on after a failed write check `failure()` or `healthy()` right after the call. Any other error
 * is rethrown. `healthy()` is not ok for the rest of the connection once one of its writes failed;
 * before that it is the store's.
 */
export function guardAudit(sink: AuditSink, onFailure: (err: AuditWriteError) => void): ConnectionAudit {
  let failed: AuditWriteError | undefined;
  const guard =
    <A extends unknown[]>(fn: (...a: A) => void) =>
    (...a: A): void => {
      try {
        fn(...a);
      } catch (err) {
        if (!(err instanceof AuditWriteError)) throw err;
        failed ??= err;
        onFailure(err);
      }
    };
  const healthy = (): AuditHealth => (failed ? { ok: false, detail: failed.message } : sink.healthy());
  return {
    append: guard((e) => sink.append(e)),
    startSession: guard((s) => sink.startSession(s)),
    endSession: guard((id, end) => sink.endSession(id, end)),
    recordingStarted: guard((id, channel, path) => sink.recordingStarted(id, channel, path)),
    recordingClosed: guard((id, channel, r) => sink.recordingClosed(id, channel, r)),
    flush: () => sink.flush(),
    healthy,
    writable: () => healthy().ok,
    failure: () => failed,
  };
}

/** How long a connection refused at login for the audit stays up for its session channel to show why (ms). */
const AUDIT_REFUSAL_GRACE_MS = 5000;
/** After a failed write mid-session: time for session.ts to write the message before the connection ends (ms). */
const AUDIT_FAILURE_GRACE_MS = 1000;
/**
 * Longest wait, after the user's connection closed, for its session channels to finish (recordings
 * flushed, fsync(2)ed and closed) before `session_end` is written anyway (ms). Below the 5 s a
 * graceful stop waits for connections (server.ts), so their ends are written before the store closes.
 */
export const CHANNELS_END_WAIT_MS = 3000;

/** Serves one ssh2 connection. */
export function serveConnection(deps: ConnectionDeps, client: Connection, address: string, hooks: ConnectionHooks): void {
  const rt = deps.runtime();
  const limits = rt.policy.gateway.limits;
  const source = displayAddress(address);
  const connId = randomUUID();
  const log = deps.logger.child({ conn: connId, source });
  let terminated: string | undefined;
  let ready = false;
  let closed = false;
  /** After login: an audit write failed, so the connection ends (session.ts shows why on a channel it serves). */
  const audit = guardAudit(deps.audit, (err) => {
    log.error({ call: err.call, code: err.code, err: err.message }, "audit write failed");
    if (!ready || closed || terminated === "audit_failed") return;
    terminated = "audit_failed";
    const t = setTimeout(() => client.end(), AUDIT_FAILURE_GRACE_MS);
    t.unref();
    client.once("close", () => clearTimeout(t));
  });
  const emit = connectionEvents({ audit, log, metrics: deps.metrics, connId, source, now: deps.now });

  let lastExit: number | null = null;
  let sessionStarted = false;
  /** Session channels still ending (relay, recording close, channel_closed), see ConnectionContext.channelEnding. */
  const channelsEnding = new Set<Promise<void>>();
  let upstream: Promise<UpstreamClient> | undefined;
  let upstreamClient: UpstreamClient | undefined;
  let channelCounter = 0;
  const counters = { up: 0, down: 0 };
  /** Open session channels, so an administrator's end of the session can say why on them. */
  const sessionChannels = new Set<Session>();
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

  /**
   * The login or session row could not be written, or the audit is unhealthy: nothing is routed; the
   * first session channel gets the message, then the connection ends (at the latest after 5 s).
   */
  const refuseForAudit = (detail: string) => {
    terminated = "audit_failed";
    log.error({ detail }, "the audit log cannot be written; session refused");
    client.on("session", (acceptSession) => serveAuditRefusal(acceptSession(), () => client.end()));
    const t = setTimeout(() => client.end(), AUDIT_REFUSAL_GRACE_MS);
    t.unref();
    client.once("close", () => clearTimeout(t));
  };

  client.on("ready", () => {
    ready = true;
    hooks.authenticated();
    if (!accepted) return client.end();
    const failedAtLogin = audit.failure();
    if (failedAtLogin) return refuseForAudit(failedAtLogin.message);
    const { identity, alias } = accepted;
    const typed = accepted.account;
    /** The SSH user name in force: as typed, or `uid_alias` once the target menu routed the connection. */
    let account = typed;
    /** The routing decision: made at login; the target menu may replace a `no_alias` refusal once. */
    let decision: RouteDecision = resolveRoute(deps.runtime().policy, identity, alias);
    /** The session row is written: connect to the target (its close ends the connection; its remote forwards come back). */
    const startUpstream = (a: ApprovedTarget) => {
      sessionStarted = true;
      upstream = openUpstream(a, ctx);
      upstream.then(
        (c) => {
          upstreamClient = c;
          c.on("close", () => client.end());
          serveRemoteForwards(ctx, c);
        },
        () => undefined,
      );
    };
    /** This connection as a live session of the server (reloads, limits, the web console's list and end). */
    const liveSession = (routeAlias: string | undefined, targetName: string, acct: string): LiveSession => ({
      identity,
      alias: routeAlias,
      targetName,
      emit,
      end: (why) => ctx.terminate(why),
      startedAt: deps.now(),
      account: acct,
      source,
      bytes: () => ({ ...counters }),
      tell: (message) => {
        // ssh2 keeps the channel a session request accepted in `_channel` (set by the exec/shell/subsystem handlers).
        for (const session of sessionChannels) {
          const ch = acceptedChannel(session);
          if (ch) writeStderr(ch, message);
        }
      },
    });
    const ctx: ConnectionContext = {
      client,
      connId,
      get account() {
        return account;
      },
      identity,
      get decision() {
        return decision;
      },
      audit,
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
        if (terminated === undefined) {
          // ssh2's end() sends DISCONNECT and half-closes; a peer that never closes its side is cut after 5 s.
          const sock = connectionSocket(client);
          setTimeout(() => sock?.destroy(), 5000).unref();
        }
        terminated = reason;
        client.end();
      },
      setExit: (code) => {
        lastExit = code;
      },
      nextChannel: () => ++channelCounter,
      channelEnding: (done) => {
        const settled: Promise<void> = done.then(
          () => undefined,
          () => undefined,
        );
        channelsEnding.add(settled);
        void settled.then(() => channelsEnding.delete(settled));
      },
      agentRequested: false,
    };
    monitor.start();
    if (decision.kind === "refused") {
      emit({ type: "route_refused", uid: identity.uid, account, reason: decision.reason, aliases: decision.aliases });
    } else {
      const a = decision.approved;
      // A new session needs its row and session_start event written: refused while the audit is unhealthy.
      const health = audit.healthy();
      if (!health.ok) return refuseForAudit(health.detail);
      const live = liveSession(alias, a.targetName, account);
      if (!hooks.sessionStarting(connId, live)) {
        emit({ type: "closing", reason: "max_sessions" });
        return client.end();
      }
      audit.startSession({ id: connId, uid: identity.uid, account, target: a.targetName, source });
      const failed = audit.failure();
      if (failed) {
        hooks.sessionEnded(connId);
        return refuseForAudit(failed.message);
      }
      startUpstream(a);
    }
    const noAlias = decision.kind === "refused" && decision.reason === "no_alias" ? menuOptions() : undefined;
    client.on("session", (acceptSession, rejectSession) => {
      if (!monitor.openChannel()) {
        emit({ type: "channel_refused", uid: identity.uid, data: { kind: "session", reason: "max_channels" } });
        return rejectSession();
      }
      const channel = acceptSession();
      sessionChannels.add(channel);
      channel.once("close", () => sessionChannels.delete(channel));
      serveSession(ctx, channel, () => monitor.closeChannel(), noAlias);
    });

    /**
     * A login without an alias: the target menu and `ssh-config`. A choice is checked again as a
     * `uid_alias` login is (resolveRoute under the policy in force, the audit's health, max_sessions),
     * audited (`menu_choice`, then the session row and its session_start as for that login), and from
     * then on the connection is that login: its decision, account, live session, upstream.
     */
    function menuOptions(): NoAliasOptions {
      const uid = identity.uid;
      return {
        entries: () => routesFor(deps.runtime().policy, identity).map((r) => ({ alias: r.alias, description: r.description })),
        quit: (reason) => emit({ type: "menu_choice", uid, account: typed, result: "quit", reason }),
        sshConfig: (gateway) => {
          const policy = deps.runtime().policy;
          const sock = connectionSocket(client);
          const local =
            sock?.localAddress && sock.localPort ? { host: displayAddress(sock.localAddress), port: sock.localPort } : undefined;
          const where = gateway ?? local ?? parseHostPort(policy.gateway.listen[0] ?? "", 22) ?? { host: "GATEWAY", port: 22 };
          const routes = routesFor(policy, identity);
          log.info({ gateway: `${where.host}:${where.port}` }, "ssh-config printed");
          return renderSshConfig({ uid, routes, host: where.host, port: where.port, hostKeys: publicKeyLines(deps.hostKeys ?? []) });
        },
        choose: (chosen) => {
          if (decision.kind === "approved" || terminated) {
            return `varco: this connection already goes to ${printable(account)}; open another connection for another target.\r\n`;
          }
          const chosenAccount = `${uid}_${chosen}`;
          const d = resolveRoute(deps.runtime().policy, identity, chosen);
          if (d.kind === "refused") {
            emit({ type: "menu_choice", uid, account: typed, result: "refused", alias: chosen });
            emit({ type: "route_refused", uid, account: chosenAccount, reason: d.reason, aliases: d.aliases });
            return refusalMessage(chosenAccount, uid, d.aliases);
          }
          const a = d.approved;
          const auditDown = (detail: string) => {
            log.error({ detail }, "the audit log cannot be written; session refused");
            ctx.terminate("audit_failed");
            return AUDIT_UNAVAILABLE_MESSAGE;
          };
          const health = audit.healthy();
          if (!health.ok) return auditDown(health.detail);
          const live = liveSession(chosen, a.targetName, chosenAccount);
          if (!hooks.sessionStarting(connId, live)) {
            emit({ type: "closing", reason: "max_sessions" });
            return "varco: the gateway has reached its session limit; try again later.\r\n";
          }
          emit({ type: "menu_choice", uid, account: typed, result: "ok", alias: chosen, target: a.targetName });
          if (!audit.failure()) audit.startSession({ id: connId, uid, account: chosenAccount, target: a.targetName, source });
          const failed = audit.failure();
          if (failed) {
            hooks.sessionEnded(connId);
            return auditDown(failed.message);
          }
          decision = d;
          account = chosenAccount;
          startUpstream(a);
          return undefined;
        },
      };
    }
    serveForwarding(ctx, {
      policy: () => deps.runtime().policy,
      connectTimeoutMs: rt.policy.gateway.upstream_timeout,
      // A tunnel is a live session of its own: max_sessions, reloads and the graceful stop see it.
      register: (id, live) => hooks.sessionStarting(id, live),
      unregister: (id) => hooks.sessionEnded(id),
    });
  });

  client.on("error", (err) => log.debug({ err: err.message }, "downstream error"));
  client.on("close", () => {
    closed = true;
    login.abandon();
    monitor.stop();
    upstream?.then(
      (c) => c.end(),
      () => undefined,
    );
    if (sessionStarted) hooks.sessionEnded(connId);
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      if (sessionStarted) {
        let result = "ok";
        if (!upstreamClient) result = "upstream_failed";
        if (terminated) result = "terminated";
        // A failure here is logged by the guard; the store keeps the end queued and writes it when it can.
        audit.endSession(connId, { result, upBytes: counters.up, downBytes: counters.down, exitStatus: lastExit });
        log.info({ up: counters.up, down: counters.down, exit_status: lastExit }, "session ended");
      }
      // Last: a graceful stop waits (bounded) for every connection to get here.
      hooks.closed();
    };
    if (channelsEnding.size === 0) return end();
    // The channels' recordings close first (their upstream ends now), so session_end is the session's
    // last event and carries the last exit status; a recording stuck on the disk does not hold it long.
    const timer = setTimeout(() => {
      log.warn({ channels: channelsEnding.size, ms: CHANNELS_END_WAIT_MS }, "session ended before its channels' recordings closed");
      end();
    }, CHANNELS_END_WAIT_MS);
    void Promise.all([...channelsEnding]).then(() => {
      clearTimeout(timer);
      end();
    });
  });
}
