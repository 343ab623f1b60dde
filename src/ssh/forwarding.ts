/**
 * Port forwarding where a route allows it: local forwards (`ssh -L`, direct-tcpip channels,
 * RFC 4254 §7.2) opened from the target, and remote forwards (`ssh -R`, tcpip-forward global
 * requests, RFC 4254 §7.1) whose listener opens on the target, each connection coming back to the
 * user as a forwarded-tcpip channel. Every forwarded stream counts as activity and as a channel.
 */
import type { ClientChannel, Client as UpstreamClient } from "ssh2";
import { authorizeChannel, type ChannelRequest } from "../routing/index.ts";
import { approvedOf, type ConnectionContext } from "./context.ts";
import { relayStream } from "./relay.ts";

/** Serves direct-tcpip channels and tcpip-forward requests of a routed connection. */
export function serveForwarding(ctx: ConnectionContext): void {
  const { client } = ctx;
  const a = approvedOf(ctx);
  const uid = ctx.identity.uid;
  const allowed = (request: ChannelRequest) => a !== undefined && ctx.upstream !== undefined && authorizeChannel(a.route, request).allow;

  client.on("tcpip", (accept, reject, info) => {
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
