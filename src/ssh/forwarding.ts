/**
 * Port forwarding where a route allows it: local forwards (`ssh -L`, direct-tcpip channels,
 * RFC 4254 §7.2) opened from the target, and remote forwards (`ssh -R`, tcpip-forward global
 * requests, RFC 4254 §7.1) whose listener opens on the target, each connection coming back to the
 * user as a forwarded-tcpip channel. Every forwarded stream counts as activity and as a channel.
 * On a login without an alias, a direct-tcpip channel is jump-host mode (`ssh -J`, see
 * routing/jump.ts): a TCP connection from the gateway to the route's target, audited as a tunnel.
 */
import { connect, type Socket } from "node:net";
import type { ClientChannel, ServerChannel, TcpipRequestInfo, Client as UpstreamClient } from "ssh2";
import type { Policy } from "../policy/index.ts";
import { authorizeChannel, authorizeJump, type ChannelRequest } from "../routing/index.ts";
import type { LiveSession } from "./connection.ts";
import { approvedOf, type ConnectionContext } from "./context.ts";
import { pump, relayStream } from "./relay.ts";

let tunnelCounter = 0;

/** What jump-host mode needs from the gateway beyond the connection. */
export interface JumpOptions {
  /** The policy in force now (a reload applies to tunnels opened after it). */
  readonly policy: () => Policy;
  /** How long the TCP connect to the target may take (ms; `gateway.upstream_timeout`). */
  readonly connectTimeoutMs: number;
  /** Registers an open tunnel as a live session; false when `max_sessions` is reached (the tunnel is refused). */
  readonly register?: (id: string, live: LiveSession) => boolean;
  readonly unregister?: (id: string) => void;
}

/**
 * Serves direct-tcpip channels and tcpip-forward requests of a routed connection: `port_forwarding`
 * decides them. With `jump`, a direct-tcpip channel of a connection logged in without an alias is
 * decided by `authorizeJump` instead (and served by the gateway's own TCP connection to the target);
 * without `jump`, or on any other refused connection, every such request is refused as before.
 */
export function serveForwarding(ctx: ConnectionContext, jump?: JumpOptions): void {
  const { client } = ctx;
  const uid = ctx.identity.uid;
  // Read per request: the target menu may route a no-alias login after it logged in.
  const allowed = (request: ChannelRequest) => {
    const a = approvedOf(ctx);
    return a !== undefined && ctx.upstream !== undefined && authorizeChannel(a.route, request).allow;
  };

  client.on("tcpip", (accept, reject, info) => {
    if (jump && ctx.decision.kind === "refused" && ctx.decision.reason === "no_alias") return serveJump(ctx, jump, accept, reject, info);
    const a = approvedOf(ctx);
    if (!allowed({ type: "direct-tcpip", host: info.destIP, port: info.destPort }) || !ctx.upstream) {
      ctx.emit({
        type: "channel_refused",
        uid,
        target: a?.targetName,
        data: { kind: "direct-tcpip", host: info.destIP, port: info.destPort },
      });
      return reject();
    }
    if (!ctx.monitor.openChannel()) {
      ctx.emit({ type: "channel_refused", uid, target: a?.targetName, data: { kind: "direct-tcpip", reason: "max_channels" } });
      return reject();
    }
    ctx.emit({ type: "forward", uid, target: a?.targetName, data: { host: info.destIP, port: info.destPort } });
    // A forward whose event could not be written does not run.
    if (!ctx.audit.healthy().ok) {
      ctx.monitor.closeChannel();
      return reject();
    }
    ctx.upstream
      .then(
        (up) =>
          new Promise<ClientChannel>((resolve, rej) =>
            up.forwardOut(info.srcIP, info.srcPort, info.destIP, info.destPort, (err, ch) => (err ? rej(err) : resolve(ch))),
          ),
      )
      .then(
        (ch) => {
          const down = accept();
          down.once("close", () => ctx.monitor.closeChannel());
          relayStream(down, ch, ctx.count);
        },
        () => {
          ctx.monitor.closeChannel();
          reject();
        },
      );
  });

  client.on("request", (accept, reject, name, info) => {
    const a = approvedOf(ctx);
    const { bindAddr, bindPort } = (info ?? {}) as { bindAddr: string; bindPort: number };
    const request: ChannelRequest =
      name === "tcpip-forward" || name === "cancel-tcpip-forward" ? { type: name, bindAddr, bindPort } : { type: "unsupported", name };
    if (!allowed(request) || !ctx.upstream) {
      ctx.emit({ type: "channel_refused", uid, target: a?.targetName, data: { kind: name } });
      return reject?.();
    }
    void ctx.upstream.then(
      (up) => {
        if (name === "cancel-tcpip-forward") {
          up.unforwardIn(bindAddr, bindPort, (err) => (err ? reject?.() : accept?.()));
          return;
        }
        up.forwardIn(bindAddr, bindPort, (err, port) => {
          if (err) return reject?.();
          ctx.emit({ type: "forward", uid, target: a?.targetName, data: { remote: true, bind: bindAddr, port } });
          if (!ctx.audit.healthy().ok) {
            up.unforwardIn(bindAddr, port ?? bindPort, () => undefined);
            return reject?.();
          }
          (accept as ((port?: number) => void) | undefined)?.(port);
        });
      },
      () => reject?.(),
    );
  });
}

/** Connections to a remote forward's listener on the target come back to the user. */
export function serveRemoteForwards(ctx: ConnectionContext, up: UpstreamClient): void {
  up.on("tcp connection", (details, acceptUp, rejectUp) => {
    if (!ctx.monitor.openChannel()) return rejectUp();
    ctx.client.forwardOut(details.destIP, details.destPort, details.srcIP, details.srcPort, (err, down) => {
      if (err) {
        ctx.monitor.closeChannel();
        return rejectUp();
      }
      down.once("close", () => ctx.monitor.closeChannel());
      relayStream(down, acceptUp(), ctx.count);
    });
  });
}

/** A client-chosen host name made safe for an audit row and a log line: control/bidi characters become '?', at most 255 characters. */
function printableHost(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping control characters is the point
  const unsafe = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
  return String(text).replace(unsafe, "?").slice(0, 255);
}

/**
 * One jump-host tunnel: decided by `authorizeJump` (refusals audited as `channel_refused` with
 * `jump: true` and the reason); bounded by `max_channels`; a `forward` event (`jump: true`, the
 * target's configured host and port, `phase: "open"`) is written before the gateway dials the
 * target over TCP (the user's SSH session to the target runs inside, end to end: not recorded).
 * A second `forward` event (`phase: "end"`) carries `up`/`down` bytes (user → target / target →
 * user), `duration_ms` and `result`: `ok`; `unreachable` (after an `upstream_refused` event with the
 * error; also after `gateway.upstream_timeout`); `reset`; `abandoned` (the user left while the
 * gateway dialled). Bytes count as activity for the idle timeout. EOF passes on in each direction
 * (the socket is half-open capable).
 */
function serveJump(ctx: ConnectionContext, o: JumpOptions, accept: () => ServerChannel, reject: () => void, info: TcpipRequestInfo): void {
  const uid = ctx.identity.uid;
  const requested = { host: printableHost(info.destIP), port: info.destPort };
  const d = authorizeJump(o.policy(), ctx.identity, String(info.destIP), info.destPort);
  if (!d.allow) {
    ctx.emit({
      type: "channel_refused",
      uid,
      target: d.targetName,
      data: { kind: "direct-tcpip", jump: true, ...requested, reason: d.reason },
    });
    reject();
    return;
  }
  if (!ctx.monitor.openChannel()) {
    ctx.emit({ type: "channel_refused", uid, target: d.targetName, data: { kind: "direct-tcpip", jump: true, reason: "max_channels" } });
    reject();
    return;
  }
  const { host, port } = d.target;
  // A live session of the server: max_sessions, a reload that removes the jump, a graceful stop.
  const tunnelId = `${ctx.connId}/jump-${++tunnelCounter}`;
  let sock: Socket | undefined;
  let down: ServerChannel | undefined;
  const live: LiveSession = {
    identity: ctx.identity,
    alias: undefined,
    targetName: d.targetName,
    emit: ctx.emit,
    end: (why) => {
      result = why;
      sock?.destroy();
      down?.close();
    },
    stillAllowed: (policy) => {
      const again = authorizeJump(policy, ctx.identity, String(info.destIP), info.destPort);
      return again.allow && again.targetName === d.targetName;
    },
  };
  if (o.register && !o.register(tunnelId, live)) {
    ctx.monitor.closeChannel();
    ctx.emit({ type: "channel_refused", uid, target: d.targetName, data: { kind: "direct-tcpip", jump: true, reason: "max_sessions" } });
    reject();
    return;
  }
  const started = ctx.now();
  ctx.emit({ type: "forward", uid, target: d.targetName, data: { jump: true, phase: "open", host, port, requested: requested.host } });
  // A tunnel whose event could not be written does not run.
  if (!ctx.audit.healthy().ok) {
    ctx.monitor.closeChannel();
    o.unregister?.(tunnelId);
    reject();
    return;
  }
  const bytes = { up: 0, down: 0 };
  let result = "ok";
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    ctx.monitor.closeChannel();
    o.unregister?.(tunnelId);
    const duration = ctx.now() - started;
    ctx.emit({
      type: "forward",
      uid,
      target: d.targetName,
      data: { jump: true, phase: "end", host, port, up: bytes.up, down: bytes.down, duration_ms: duration, result },
    });
    ctx.emit({ type: "channel_closed", kind: "jump", up: bytes.up, down: bytes.down, exitStatus: null, exitSignal: null });
  };

  const s = connect({ host, port, allowHalfOpen: true });
  sock = s;
  const timer = setTimeout(() => s.destroy(new Error(`connect timed out after ${o.connectTimeoutMs} ms`)), o.connectTimeoutMs);
  timer.unref();
  let connected = false;
  let abandoned = false;
  // The user's connection ended while the gateway was still dialling (removed once the dial settles).
  const onClientClose = () => {
    abandoned = true;
    s.destroy(new Error("the user's connection closed before the target answered"));
  };
  ctx.client.once("close", onClientClose);
  s.on("error", (err) => {
    clearTimeout(timer);
    ctx.client.off("close", onClientClose);
    // After the connect, "close" (with hadError) follows and ends the tunnel.
    if (connected) {
      result = "reset";
      return;
    }
    result = abandoned ? "abandoned" : "unreachable";
    if (!abandoned) ctx.emit({ type: "upstream_failed", uid, account: ctx.account, target: d.targetName, error: err.message });
    try {
      reject();
    } catch {
      // The user's connection is gone already.
    }
    end();
  });
  s.once("connect", () => {
    clearTimeout(timer);
    ctx.client.off("close", onClientClose);
    connected = true;
    s.setNoDelay(true);
    const ch = accept();
    down = ch;
    const toTarget = pump(ch, s, (n) => {
      bytes.up += n;
      ctx.count("up", n);
    });
    const toUser = pump(s, ch, (n) => {
      bytes.down += n;
      ctx.count("down", n);
    });
    void toTarget.then(() => s.end());
    void toUser.then(() => ch.end());
    ch.once("close", () => {
      s.destroy();
      end();
    });
    // After a clean close every byte from the target reaches the user first; after an error the channel closes now.
    s.once("close", (hadError) => {
      if (hadError) return ch.close();
      void toUser.then(() => ch.close());
    });
  });
}
