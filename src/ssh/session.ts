/**
 * Session channels (RFC 4254 §6): pty, env, window-change, signal, agent forwarding requests and
 * the shell / exec / subsystem that starts the upstream channel. What a channel may do is decided
 * by `authorizeChannel` (routing); this file only carries the decision out and relays.
 */
import type { ClientChannel, PseudoTtyInfo, ServerChannel, Session } from "ssh2";
import { createChannelAudit } from "../audit/index.ts";
import { printable } from "../obs/index.ts";
import { authorizeChannel, type ChannelRequest, parseSshConfigCommand, refusalMessage } from "../routing/index.ts";
import { approvedOf, type ConnectionContext } from "./context.ts";
import { endMenu, feedMenu, type MenuEntry, type MenuQuitReason, type MenuStep, resizeMenu, startMenu } from "./menu.ts";
import { type ByteCounter, type ExitInfo, finishDownstream, relaySession, watchExit, writeStderr } from "./relay.ts";
import { HostKeyMismatchError } from "./upstream.ts";

export const HOST_KEY_CHANGED_MESSAGE = "varco: the target's host key changed, contact an administrator.\r\n";
export const TARGET_UNREACHABLE_MESSAGE = "varco: the target is unreachable right now; try again later or contact an administrator.\r\n";
export const AUDIT_UNAVAILABLE_MESSAGE = "varco: the audit log cannot be written; the session is ended.\r\n";

function envAllowed(patterns: readonly string[], key: string): boolean {
  return patterns.some((p) => (p.endsWith("*") ? key.startsWith(p.slice(0, -1)) : p === key));
}

/** Writes `text` to the channel's stderr, then EOF, exit-status `code`, CLOSE. */
export function refuseOnChannel(ch: ServerChannel, text: string, code = 1): void {
  writeStderr(ch, text, () => finishDownstream(ch, { kind: "status", code }));
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

/**
 * What a session channel of a login without an alias offers besides the list of aliases
 * (connection.ts provides it): the target menu on a shell with a pty, and `ssh-config` as exec.
 */
export interface NoAliasOptions {
  /** The aliases to offer: the identity's own routes under the policy in force (`routesFor`). */
  entries(): readonly MenuEntry[];
  /**
   * Routes the whole connection to `alias`, re-checked as a `uid_alias` login would be
   * (`resolveRoute`, the audit's health, `max_sessions`), and audits the choice.
   * @returns `undefined` once routed (the context's decision is then approved), else the message for the user.
   */
  choose(alias: string): string | undefined;
  /** Audits a menu left without a choice. */
  quit(reason: MenuQuitReason): void;
  /** The user's own `~/.ssh/config` blocks (`ssh-config [--gateway HOST[:PORT]]`). */
  sshConfig(gateway: { host: string; port: number } | undefined): string;
}

/** Most bytes of menu output waiting for the client's window before the menu stops reading its keys. */
const MENU_OUTPUT_HIGH_WATER = 64 * 1024;

/** Serves one accepted session channel; `noAlias` enables the menu and `ssh-config` on a login without an alias. */
export function serveSession(ctx: ConnectionContext, session: Session, release: () => void, noAlias?: NoAliasOptions): void {
  let pty: PseudoTtyInfo | undefined;
  const env: Record<string, string> = {};
  let upCh: ClientChannel | undefined;
  let a = approvedOf(ctx);
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
  let resizeMenuView: (cols: number, rows: number) => void = () => undefined;
  session.on("window-change", (accept, _reject, info) => {
    resizeRecording(info.cols, info.rows);
    resizeMenuView(info.cols, info.rows);
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
    // Another channel's menu may have routed the connection since this channel opened.
    a = approvedOf(ctx);
    if (ctx.decision.kind === "refused" || !a) {
      const d = ctx.decision;
      if (noAlias && d.kind === "refused" && d.reason === "no_alias") {
        if (request.type === "shell" && pty) {
          const entries = noAlias.entries();
          if (entries.length > 0) return runMenu(noAlias, entries, down, pty);
        }
        if (request.type === "exec") {
          const cmd = parseSshConfigCommand(request.command);
          if (cmd?.kind === "invalid") return refuseOnChannel(down, `varco: ${cmd.message}\r\n`, 2);
          if (cmd) {
            let text: string;
            try {
              text = noAlias.sshConfig(cmd.gateway);
            } catch (err) {
              ctx.log.warn({ err: (err as Error).message }, "ssh-config could not be rendered");
              return refuseOnChannel(
                down,
                "varco: ssh-config cannot be printed here; ask an administrator for `varco user ssh-config`.\r\n",
              );
            }
            down.write(pty ? text.replace(/\n/g, "\r\n") : text, () => finishDownstream(down, { kind: "status", code: 0 }));
            return;
          }
        }
      }
      refuseOnChannel(down, refusalMessage(ctx.account, uid, d.kind === "refused" ? d.aliases : []));
      return;
    }
    launch(request, down, a);
  };

  /**
   * The target menu on this channel (a shell with a pty on a login without an alias): keys go to the
   * state machine (menu.ts) until it ends; a choice routes the connection and starts the shell on the
   * chosen target in this same channel, with the bytes typed after Enter as its first input.
   */
  const runMenu = (o: NoAliasOptions, entries: readonly MenuEntry[], down: ServerChannel, info: PseudoTtyInfo) => {
    let step: MenuStep = startMenu({ uid, entries, cols: info.cols, rows: info.rows });
    let active = true;
    const write = (text: string, done?: () => void) => {
      if (!text) return done?.();
      down.write(text, done);
      // A client that stops reading its output is not read from either (the menu's output stays bounded).
      if (active && down.writableLength > MENU_OUTPUT_HIGH_WATER) {
        down.pause();
        down.once("drain", () => active && down.resume());
      }
    };
    const stop = () => {
      active = false;
      down.off("data", onData);
      down.off("end", onEnd);
      resizeMenuView = () => undefined;
      down.pause();
    };
    const ended = (s: MenuStep) => {
      const outcome = s.outcome;
      if (!outcome) return;
      stop();
      if (outcome.kind === "quit") {
        o.quit(outcome.reason);
        down.resume();
        return write(s.output, () => finishDownstream(down, { kind: "status", code: 0 }));
      }
      write(s.output);
      // Type-ahead: what followed the Enter goes to the target's shell, before anything read later.
      if (outcome.rest.length > 0) down.unshift(outcome.rest);
      const refused = o.choose(outcome.alias);
      a = approvedOf(ctx);
      if (refused !== undefined || !a) {
        down.resume();
        return refuseOnChannel(down, refused ?? refusalMessage(ctx.account, uid, []));
      }
      launch({ type: "shell" }, down, a, true);
    };
    const onData = (chunk: Buffer) => {
      ctx.monitor.activity();
      step = feedMenu(step.state, chunk);
      if (step.outcome) return ended(step);
      write(step.output);
    };
    const onEnd = () => {
      step = endMenu(step.state);
      ended(step);
    };
    resizeMenuView = (cols, rows) => {
      step = resizeMenu(step.state, cols, rows);
      write(step.output);
    };
    down.on("data", onData);
    down.once("end", onEnd);
    write(step.output);
  };

  /** Starts the program on the target of approved route `a`, as decided by `authorizeChannel`; `paused`: the menu left `down` paused. */
  const launch = (
    request: Extract<ChannelRequest, { type: "shell" | "exec" | "subsystem" }>,
    down: ServerChannel,
    a: NonNullable<ReturnType<typeof approvedOf>>,
    paused = false,
  ) => {
    // A paused channel never ends, and ssh2 closes a channel only after its 'end': every way out resumes it.
    const refuse = (text: string) => {
      if (paused) down.resume();
      refuseOnChannel(down, text);
    };
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
      refuse(`varco: ${decision.reason} on ${printable(ctx.account)}.\r\n`);
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
      refuse(AUDIT_UNAVAILABLE_MESSAGE);
    };
    if (!ctx.audit.healthy().ok) return auditRefused();
    const ready = ctx.upstream ?? Promise.reject(new Error("no upstream"));
    const ended = ready
      .then(
        (up) =>
          new Promise<{ ch: ClientChannel; exitOf: () => ExitInfo | undefined }>((resolve, reject) => {
            const ptyOpts = pty
              ? { rows: pty.rows, cols: pty.cols, height: pty.height, width: pty.width, term: pty.term, modes: pty.modes }
              : undefined;
            // The exit status is listened for here, in ssh2's callback: it may come in the same packet burst.
            const cb = (err: Error | undefined, ch: ClientChannel) => (err ? reject(err) : resolve({ ch, exitOf: watchExit(ch) }));
            const agentOpt = sessionAgent ? { agentForward: true } : {};
            if (kind === "shell") up.shell(ptyOpts ?? false, { env, ...agentOpt } as never, cb);
            else if (kind === "exec") up.exec(arg, { env, ...agentOpt, ...(ptyOpts ? { pty: ptyOpts } : {}) } as never, cb);
            else up.subsys(arg, cb);
          }),
      )
      .then(
        ({ ch, exitOf }) => {
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
              writeStderr(down, `\r\nvarco: ${reason}; the session is terminated.\r\n`, () => {
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
          const relayed = relaySession(down, ch, exitOf, count, { up: audit.up, down: audit.down, stderr: audit.stderr });
          // The relay reads the channel now (the menu's type-ahead first).
          if (paused) down.resume();
          return relayed.then(async (exit: ExitInfo | undefined) => {
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
          });
        },
        (err: unknown) => {
          if (!(err instanceof HostKeyMismatchError) && ctx.upstreamClient()) {
            ctx.log.warn({ err: (err as Error).message }, "upstream refused the channel");
            refuse(`varco: the target refused the ${kind} request.\r\n`);
            return;
          }
          refuse(err instanceof HostKeyMismatchError ? HOST_KEY_CHANGED_MESSAGE : TARGET_UNREACHABLE_MESSAGE);
        },
      );
    ctx.channelEnding(ended);
  };

  session.on("shell", (accept) => start({ type: "shell" }, accept()));
  session.on("exec", (accept, _reject, info) => start({ type: "exec", command: info.command }, accept()));
  session.on("subsystem", (accept, _reject, info) => start({ type: "subsystem", name: info.name }, accept()));
}
