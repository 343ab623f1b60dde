/**
 * Session channels (RFC 4254 §6): pty, env, window-change, signal, agent forwarding requests and
 * the shell / exec / subsystem that starts the upstream channel. What a channel may do is decided
 * by `authorizeChannel` (routing); this file only carries the decision out and relays.
 */
import type { ClientChannel, PseudoTtyInfo, ServerChannel, Session } from "ssh2";
import { createChannelAudit } from "../audit/index.ts";
import { printable } from "../obs/index.ts";
import { authorizeChannel, type ChannelRequest, refusalMessage } from "../routing/index.ts";
import { approvedOf, type ConnectionContext } from "./context.ts";
import { type ByteCounter, type ExitInfo, finishDownstream, relaySession } from "./relay.ts";
import { HostKeyMismatchError } from "./upstream.ts";

export const HOST_KEY_CHANGED_MESSAGE = "varco: the target's host key changed, contact an administrator.\r\n";
export const TARGET_UNREACHABLE_MESSAGE = "varco: the target is unreachable right now; try again later or contact an administrator.\r\n";
export const AUDIT_UNAVAILABLE_MESSAGE = "varco: the audit log cannot be written; the session is ended.\r\n";

function envAllowed(patterns: readonly string[], key: string): boolean {
  return patterns.some((p) => (p.endsWith("*") ? key.startsWith(p.slice(0, -1)) : p === key));
}

/** Writes `text` to the channel's stderr, then EOF, exit-status `code`, CLOSE. */
export function refuseOnChannel(ch: ServerChannel, text: string, code = 1): void {
  ch.stderr.write(text, () => finishDownstream(ch, { kind: "status", code }));
}

/**
 * Serves a session channel of a connection whose audit cannot be written: pty requests are accepted
 * (so the message reaches an interactive terminal), everything else refused; the first shell, exec
 * or subsystem gets {@link AUDIT_UNAVAILABLE_MESSAGE} on stderr and exit status 1, then `done()`.
 */
export function serveAuditRefusal(session: Session, done: () => void): void {
  session.on("pty", (accept) => accept?.());
  session.on("env", (_accept, reject) => reject?.());
  session.on("x11", (_accept, reject) => reject?.());
  session.on("auth-agent", (_accept, reject) => reject?.());
  session.on("window-change", (accept) => accept?.());
  const refuse = (ch: ServerChannel | undefined) => {
    if (!ch) return;
    ch.once("close", done);
    refuseOnChannel(ch, AUDIT_UNAVAILABLE_MESSAGE);
  };
  session.on("shell", (accept) => refuse(accept()));
  session.on("exec", (accept) => refuse(accept()));
  session.on("subsystem", (accept) => refuse(accept()));
}

/** Serves one accepted session channel. */
export function serveSession(ctx: ConnectionContext, session: Session, release: () => void): void {
  let pty: PseudoTtyInfo | undefined;
  const env: Record<string, string> = {};
  let upCh: ClientChannel | undefined;
  const a = approvedOf(ctx);
  const route = a?.route;
  const uid = ctx.identity.uid;
  let started = false;
  // One shell/exec/subsystem per session channel (RFC 4254 §6.5); the channel slot is freed when it closes.
  session.once("close", release);

  session.on("pty", (accept, _reject, info) => {
    pty = info;
    accept?.();
  });
  session.on("env", (accept, reject, info) => {
    if (route && envAllowed(route.env, info.key)) {
      env[info.key] = info.val;
      accept?.();
    } else {
      reject?.();
    }
  });
  let resizeRecording: (cols: number, rows: number) => void = () => undefined;
  session.on("window-change", (accept, _reject, info) => {
    resizeRecording(info.cols, info.rows);
    if (upCh) upCh.setWindow(info.rows, info.cols, info.height, info.width);
    else if (pty) pty = { ...pty, rows: info.rows, cols: info.cols, height: info.height, width: info.width };
    accept?.();
  });
  session.on("signal", (accept, _reject, info) => {
    upCh?.signal(info.name);
    accept?.();
  });
  const refuseRequest = (request: ChannelRequest, reject: (() => void) | undefined) => {
    ctx.emit({ type: "channel_refused", uid, target: a?.targetName, data: { kind: request.type } });
    reject?.();
  };
  session.on("x11", (_accept, reject) => refuseRequest({ type: "x11" }, reject));
  let sessionAgent = false;
  session.on("auth-agent", (accept, reject) => {
    const d = route ? authorizeChannel(route, { type: "auth-agent" }) : undefined;
    if (!d?.allow) return refuseRequest({ type: "auth-agent" }, reject);
    ctx.agentRequested = true;
    sessionAgent = true;
    ctx.emit({ type: "forward", uid, target: a?.targetName, data: { agent: true } });
    accept?.();
  });

  const start = (request: Extract<ChannelRequest, { type: "shell" | "exec" | "subsystem" }>, down: ServerChannel | undefined) => {
    if (!down) return;
    if (started) return refuseOnChannel(down, "varco: one program per session channel.\r\n");
    started = true;
    if (ctx.decision.kind === "refused" || !a) {
      refuseOnChannel(down, refusalMessage(ctx.account, uid, ctx.decision.kind === "refused" ? ctx.decision.aliases : []));
      return;
    }
    const kind = request.type;
    const arg = request.type === "exec" ? request.command : request.type === "subsystem" ? request.name : "";
    const decision = authorizeChannel(a.route, request);
    if (!decision.allow) {
      ctx.emit({
        type: "channel_refused",
        uid,
        target: a.targetName,
        data: { kind, what: decision.what, ...(kind === "exec" ? { command: arg } : {}) },
      });
      refuseOnChannel(down, `varco: ${decision.reason} on ${printable(ctx.account)}.\r\n`);
      return;
    }
    ctx.emit({
      type: "channel_open",
      kind,
      uid,
      target: a.targetName,
      data:
        kind === "exec"
          ? { command: arg, pty: Boolean(pty), as: decision.permission }
          : kind === "subsystem"
            ? { name: arg }
            : { pty: Boolean(pty), term: pty?.term },
    });
    // The program may reach the target only once its event is committed.
    const auditRefused = () => {
      down.once("close", () => ctx.terminate("audit_failed"));
      refuseOnChannel(down, AUDIT_UNAVAILABLE_MESSAGE);
    };
    if (!ctx.audit.healthy().ok) return auditRefused();
    const ready = ctx.upstream ?? Promise.reject(new Error("no upstream"));
    ready
      .then(
        (up) =>
          new Promise<ClientChannel>((resolve, reject) => {
            const ptyOpts = pty
              ? { rows: pty.rows, cols: pty.cols, height: pty.height, width: pty.width, term: pty.term, modes: pty.modes }
              : undefined;
            const cb = (err: Error | undefined, ch: ClientChannel) => (err ? reject(err) : resolve(ch));
            const agentOpt = sessionAgent ? { agentForward: true } : {};
            if (kind === "shell") up.shell(ptyOpts ?? false, { env, ...agentOpt } as never, cb);
            else if (kind === "exec") up.exec(arg, { env, ...agentOpt, ...(ptyOpts ? { pty: ptyOpts } : {}) } as never, cb);
            else up.subsys(arg, cb);
          }),
      )
      .then(
        (ch) => {
          upCh = ch;
          const mine = { up: 0, down: 0 };
          const count: ByteCounter = (dir, n) => {
            mine[dir] += n;
            ctx.count(dir, n);
          };
          const channelNo = ctx.nextChannel();
          const audit = createChannelAudit({
            audit: ctx.audit,
            recordingsDir: ctx.recordingsDir(),
            sessionId: ctx.connId,
            channel: channelNo,
            uid,
            account: ctx.account,
            target: a.targetName,
            kind,
            arg,
            command: decision.command,
            pty: pty ? { cols: pty.cols, rows: pty.rows, term: pty.term } : undefined,
            record: a.route.record,
            now: ctx.now,
            terminate: (reason) => {
              // Tell the user why, but never wait on a client that stopped reading: end within 1 s anyway.
              const end = setTimeout(() => ctx.terminate(reason), 1000);
              down.stderr.write(`\r\nvarco: ${reason}; the session is terminated.\r\n`, () => {
                clearTimeout(end);
                ctx.terminate(reason);
              });
            },
            log: (msg, fields) => ctx.log.warn(fields, msg),
          });
          // Once the user's side is gone, the taps stop holding the relay (a terminated session's recording closes).
          down.once("close", () => audit.release());
          // The recording's row (or its failure event) could not be written: nothing is relayed.
          if (!ctx.audit.healthy().ok) {
            ch.close();
            auditRefused();
            return audit.close(mine);
          }
          resizeRecording = audit.resize;
          return relaySession(down, ch, count, { up: audit.up, down: audit.down, stderr: audit.stderr }).then(
            async (exit: ExitInfo | undefined) => {
              if (exit?.kind === "status") ctx.setExit(exit.code);
              await audit.close(mine);
              ctx.emit({
                type: "channel_closed",
                kind,
                up: mine.up,
                down: mine.down,
                exitStatus: exit?.kind === "status" ? exit.code : null,
                exitSignal: exit?.kind === "signal" ? exit.signal : null,
              });
            },
          );
        },
        (err: unknown) => {
          if (!(err instanceof HostKeyMismatchError) && ctx.upstreamClient()) {
            ctx.log.warn({ err: (err as Error).message }, "upstream refused the channel");
            refuseOnChannel(down, `varco: the target refused the ${kind} request.\r\n`);
            return;
          }
          refuseOnChannel(down, err instanceof HostKeyMismatchError ? HOST_KEY_CHANGED_MESSAGE : TARGET_UNREACHABLE_MESSAGE);
        },
      );
  };

  session.on("shell", (accept) => start({ type: "shell" }, accept()));
  session.on("exec", (accept, _reject, info) => start({ type: "exec", command: info.command }, accept()));
  session.on("subsystem", (accept, _reject, info) => start({ type: "subsystem", name: info.name }, accept()));
}
