/**
 * The downstream SSH server (ssh2 `Server`): authenticates users with their chain
 * (keyboard-interactive RFC 4256, password with partial success RFC 4252 §5.1), routes them, opens
 * the upstream with the gateway's egress key, and relays session channels (RFC 4254 §6) and, where
 * a route allows it, direct-tcpip channels (RFC 4254 §7.2).
 */
import { randomUUID } from "node:crypto";
import { type AddressInfo, createServer, type Server as NetServer, type Socket } from "node:net";
import ssh2, {
  type ClientChannel,
  type Connection,
  type KeyboardAuthContext,
  type PseudoTtyInfo,
  type ServerChannel,
  type Session,
  type Server as SshServer,
  type Client as UpstreamClient,
} from "ssh2";
import { type AuditSink, createChannelAudit } from "../audit/index.ts";
import type { Authenticator } from "../auth/index.ts";
import { type GatewayMetrics, type Logger, NO_METRICS } from "../obs/index.ts";
import { type AuthMethod, type Policy, parseHostPort } from "../policy/index.ts";
import {
  type ApprovedTarget,
  type AuthenticatedIdentity,
  authorizeChannel,
  markAuthenticated,
  parseAccount,
  type RouteDecision,
  refusalMessage,
  resolveRoute,
} from "../routing/index.ts";
import { relayAgent } from "./agent.ts";
import { type ByteCounter, type ExitInfo, finishDownstream, relaySession, relayStream } from "./relay.ts";
import { connectUpstream, HostKeyMismatchError, parseHostKeyLine } from "./upstream.ts";

export const PASSWORD_PROMPT = "Password: ";
export const CODE_PROMPT = "Verification code: ";
export const HOST_KEY_CHANGED_MESSAGE = "varco: the target's host key changed, contact an administrator.\r\n";
export const TARGET_UNREACHABLE_MESSAGE = "varco: the target is unreachable right now; try again later or contact an administrator.\r\n";

/** Everything the gateway needs, injected by the composition root. */
export interface GatewayDeps {
  /** The policy in force; read at each new connection so a reload applies to new logins. */
  readonly policy: () => Policy;
  readonly hostKeys: readonly Buffer[];
  readonly egressKey: Buffer;
  readonly authenticator: Authenticator;
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
   * Resolves once every connection's close handler (session_end row) ran, or after 5 s more.
   */
  close(drainMs?: number): Promise<void>;
  /**
   * The policy was swapped: sessions whose route no longer grants their target are audited and,
   * with `gateway.on_route_removed: terminate`, closed. Returns how many sessions were affected.
   */
  policyChanged(): number;
  /** Live counts, for health and metrics. */
  stats(): { connections: number; unauthenticated: number; sessions: number };
}

function envAllowed(patterns: readonly string[], key: string): boolean {
  return patterns.some((p) => (p.endsWith("*") ? key.startsWith(p.slice(0, -1)) : p === key));
}

/** Writes `text` to the channel's stderr, then EOF, exit-status `code`, CLOSE. */
function refuseOnChannel(ch: ServerChannel, text: string, code = 1): void {
  ch.stderr.write(text, () => finishDownstream(ch, { kind: "status", code }));
}

/** Creates the gateway. Call `listen()` to start. */
export function createGateway(deps: GatewayDeps): Gateway {
  const servers: NetServer[] = [];
  const connections = new Set<Connection>();
  let unauthenticated = 0;
  const unauthBySource = new Map<string, number>();
  let sessions = 0;

  /**
   * Pre-auth limits at the TCP level, before ssh2 sees a byte: ssh2 only reports a connection once
   * the client sent its identification line, so a slow-loris that never does must be counted and
   * timed out here (gateway.limits: max_unauthenticated, max_unauthenticated_per_source, login_grace).
   */
  const preAuth = new Map<string, { authenticated: () => void }>();
  const metrics = deps.metrics ?? NO_METRICS;
  /** Live routed sessions, for policy reloads. */
  const active = new Map<
    string,
    { identity: AuthenticatedIdentity; alias: string | undefined; targetName: string; end: (why: string) => void }
  >();
  const guardSocket = (socket: Socket, ssh: SshServer) => {
    const limits = deps.policy().gateway.limits;
    const source = socket.remoteAddress ?? "?";
    const key = `${source}|${socket.remotePort}`;
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
    preAuth.set(key, { authenticated: leave });
    socket.once("close", leave);
    // No Nagle: SFTP and interactive sessions are request/response; OpenSSH sets TCP_NODELAY too.
    socket.setNoDelay(true);
    ssh.injectSocket(socket);
  };

  const onConnection = (client: Connection, info: { ip: string; port: number }) => {
    const policy = deps.policy();
    const limits = policy.gateway.limits;
    const source = info.ip;
    const connId = randomUUID();
    const log = deps.logger.child({ conn: connId, source });
    connections.add(client);

    // The socket-level guard (below) counted this connection as unauthenticated and runs login_grace.
    const pre = preAuth.get(`${info.ip}|${info.port}`);
    const leaveUnauth = () => pre?.authenticated();

    // Auth state is bound to one user name; a different name starts over (no factor carries across users).
    let authUser: string | undefined;
    const done = new Set<AuthMethod>();
    let groups: readonly string[] = [];
    let breakGlass = false;
    let enrolSecret: string | undefined;
    let attempts = 0;
    let authStartedAt: number | undefined;
    let loginIdentity: AuthenticatedIdentity | undefined;
    let decision: RouteDecision | undefined;
    let username = "";
    let uid = "";
    let sessionStarted = false;
    let upstream: Promise<UpstreamClient> | undefined;
    let upstreamClient: UpstreamClient | undefined;
    let lastExit: number | null = null;
    let channelCounter = 0;
    let agentRequested = false;
    let terminated: string | undefined;
    let lastActivity = deps.now();
    const counters = { up: 0, down: 0 };
    const countBytes: ByteCounter = (dir, n) => {
      counters[dir] += n;
    };

    const chains = () => deps.policy().auth.chains;
    const remaining = (chain: readonly AuthMethod[]) => chain.filter((f) => !done.has(f));
    const completedChain = () => chains().find((c) => remaining(c).length === 0);
    /** SSH methods that can make progress on some chain (RFC 4252 §5.1 "authentications that can continue"). */
    const nextMethods = (): string[] => {
      const m = new Set<string>();
      for (const c of chains()) {
        for (const f of remaining(c)) {
          if (f === "publickey") m.add("publickey");
          if (f === "password") {
            m.add("keyboard-interactive");
            m.add("password");
          }
          if (f === "totp") m.add("keyboard-interactive");
        }
      }
      return [...m];
    };
    /** The password/totp factors one keyboard-interactive round should ask: the closest chain's. */
    const kbdFactors = (): AuthMethod[] | undefined => {
      const candidates = chains()
        .map(remaining)
        .filter((r) => r.length > 0 && r.every((f) => f === "password" || f === "totp"))
        .sort((a, b) => a.length - b.length);
      return candidates[0];
    };

    // Every refusal looks the same to the client: the same methods, no partial success, and every
    // factor already passed is forgotten, so the next round starts over.
    const refuseAuth = (ctx: { reject: (m?: never[], p?: boolean) => void }, reason: string) => {
      attempts += 1;
      done.clear();
      groups = [];
      breakGlass = false;
      enrolSecret = undefined;
      const now = deps.now();
      const lock = deps.authenticator.failed(uid, source, now);
      deps.audit.append({ type: "login_refused", sessionId: connId, uid, account: username, source, result: reason });
      if (lock.lockedUid)
        deps.audit.append({ type: "lock", uid, source, result: "uid_locked", data: { reason: "auth.lockout.max_failures" } });
      if (lock.lockedSource)
        deps.audit.append({ type: "lock", uid, source, result: "source_locked", data: { reason: "auth.lockout.max_failures_per_source" } });
      log.info({ account: username, reason, attempts }, "login refused");
      metrics.login(reason);
      if (authStartedAt !== undefined) metrics.authSeconds((deps.now() - authStartedAt) / 1000);
      if (reason === "directory_unavailable") metrics.ldapError();
      if (attempts >= limits.max_auth_attempts) {
        client.end();
        return;
      }
      ctx.reject(nextMethods() as never[]);
    };

    /** After a factor passed: accept if a chain is complete, else partial success (RFC 4252 §5.1). */
    const progress = (ctx: { accept: () => void; reject: (m?: never[], p?: boolean) => void }) => {
      const chain = completedChain();
      if (!chain) {
        ctx.reject(nextMethods() as never[], true);
        return;
      }
      const identity = markAuthenticated(uid, groups, chain);
      const { alias } = parseAccount(username);
      decision = resolveRoute(deps.policy(), identity, alias);
      deps.authenticator.succeeded(uid);
      deps.audit.append({
        type: "login",
        sessionId: connId,
        uid,
        account: username,
        source,
        result: "ok",
        data: { factors: chain, break_glass: breakGlass },
      });
      if (breakGlass) deps.audit.append({ type: "break_glass", sessionId: connId, uid, account: username, source, result: "ok" });
      log.info({ account: username, uid, factors: chain, break_glass: breakGlass }, "login ok");
      metrics.login("ok");
      if (authStartedAt !== undefined) metrics.authSeconds((deps.now() - authStartedAt) / 1000);
      loginIdentity = identity;
      ctx.accept();
    };

    const checkPassword = async (password: string): Promise<string | undefined> => {
      const v = await deps.authenticator.password(uid, password);
      if (v.kind === "unavailable") {
        log.warn({ reason: v.reason }, "directory unavailable");
        return "directory_unavailable";
      }
      if (v.kind === "invalid") return "bad_password";
      groups = v.groups;
      breakGlass = v.local;
      done.add("password");
      return undefined;
    };

    const checkCode = async (code: string): Promise<string | undefined> => {
      const v = await deps.authenticator.totp(uid, code.trim(), deps.now());
      if (v === "invalid") return deps.authenticator.hasTotp(uid) ? "bad_code" : "no_totp_secret";
      if (v === "recovery") deps.audit.append({ type: "recovery_code_used", sessionId: connId, uid, source, result: "ok" });
      done.add("totp");
      return undefined;
    };

    client.on("authentication", (ctx) => {
      authStartedAt ??= deps.now();
      if (authUser !== ctx.username) {
        authUser = ctx.username;
        done.clear();
        groups = [];
        breakGlass = false;
        enrolSecret = undefined;
        username = ctx.username;
        uid = parseAccount(username).uid;
      }
      const run = (fn: () => Promise<void>) =>
        void fn().catch((err: unknown) => {
          log.error({ err: (err as Error).message }, "authentication error");
          refuseAuth(ctx, "internal_error");
        });
      const wanted = (f: AuthMethod) => chains().some((c) => remaining(c).includes(f));
      if (ctx.method !== "none" && deps.authenticator.locked(uid, source, deps.now())) return refuseAuth(ctx, "locked");

      if (ctx.method === "publickey") {
        if (!wanted("publickey")) return ctx.reject(nextMethods() as never[]);
        return run(async () => {
          const signed = ctx.signature && ctx.blob ? { blob: ctx.blob, signature: ctx.signature, hashAlgo: ctx.hashAlgo } : undefined;
          const ok = await deps.authenticator.publickey(uid, ctx.key, signed);
          if (!signed) {
            // A probe ("would this key do?", RFC 4252 §7): not a failure, no lockout count.
            return ok ? ctx.accept() : ctx.reject(nextMethods() as never[]);
          }
          if (!ok) return refuseAuth(ctx, "bad_publickey");
          if (!done.has("password")) groups = ok.groups;
          done.add("publickey");
          progress(ctx);
        });
      }
      if (ctx.method === "password") {
        if (!wanted("password")) return refuseAuth(ctx, "password_not_wanted");
        return run(async () => {
          const bad = await checkPassword(ctx.password);
          if (bad) return refuseAuth(ctx, bad);
          progress(ctx);
        });
      }
      if (ctx.method === "keyboard-interactive") {
        const factors = kbdFactors();
        if (!factors) return ctx.reject(nextMethods() as never[]);
        return run(async () => {
          // Enrolment inside the login: only after the password, only for users without a secret.
          if (
            deps.authenticator.enrolOnFirstLogin &&
            factors.includes("totp") &&
            done.has("password") &&
            !deps.authenticator.hasTotp(uid)
          ) {
            return enrol(ctx);
          }
          const askPassword = factors.includes("password");
          const askCode =
            factors.includes("totp") && !(askPassword && deps.authenticator.enrolOnFirstLogin && !deps.authenticator.hasTotp(uid));
          const prompts = [
            ...(askPassword ? [{ prompt: PASSWORD_PROMPT, echo: false }] : []),
            ...(askCode ? [{ prompt: CODE_PROMPT, echo: false }] : []),
          ];
          ctx.prompt(prompts, "", "", (answers) =>
            run(async () => {
              let i = 0;
              if (askPassword) {
                const bad = await checkPassword(answers[i++] ?? "");
                if (bad) return refuseAuth(ctx, bad);
              }
              if (askCode) {
                const bad = await checkCode(answers[i++] ?? "");
                if (bad) return refuseAuth(ctx, bad);
              }
              if (!askCode && factors.includes("totp") && deps.authenticator.enrolOnFirstLogin && !deps.authenticator.hasTotp(uid)) {
                return enrol(ctx);
              }
              progress(ctx);
            }),
          );
        });
      }
      ctx.reject(nextMethods() as never[]);
    });

    /** First-login TOTP enrolment: show the QR and URI, confirm with a code, show the recovery codes. */
    const enrol = async (ctx: KeyboardAuthContext) => {
      const e = await deps.authenticator.enrolment(uid);
      enrolSecret = e.secret;
      const instructions = `No second factor is set up for ${uid} yet. Scan this QR code with an authenticator app, or add the key by hand:\n${e.qr}\n${e.uri}\n`;
      ctx.prompt(
        [{ prompt: CODE_PROMPT, echo: false }],
        "varco: set up your second factor",
        instructions,
        (answers) =>
          void (async () => {
            const codes = enrolSecret
              ? await deps.authenticator.confirmEnrolment(uid, enrolSecret, (answers[0] ?? "").trim(), deps.now())
              : undefined;
            enrolSecret = undefined;
            if (!codes) return refuseAuth(ctx, "enrolment_code_wrong");
            done.add("totp");
            deps.audit.append({ type: "enrolled", sessionId: connId, uid, source, result: "ok", data: { recovery_codes: codes.length } });
            const text = `Second factor set up. Keep these single-use recovery codes somewhere safe; each replaces a code once:\n${codes.join("  ")}\n`;
            ctx.prompt([{ prompt: "Press Enter once you have saved them: ", echo: true }], "varco: recovery codes", text, () =>
              progress(ctx),
            );
          })().catch(() => refuseAuth(ctx, "internal_error")),
      );
    };

    let authed = false;
    client.on("ready", () => {
      authed = true;
      leaveUnauth();
      const current = decision;
      if (!current) return client.end();
      if (current.kind === "refused") {
        deps.audit.append({
          type: "route_refused",
          sessionId: connId,
          uid,
          account: username,
          source,
          result: current.reason,
          data: { allowed_aliases: current.aliases },
        });
        log.info({ account: username, reason: current.reason }, "route refused");
        return;
      }
      if (sessions >= deps.policy().gateway.limits.max_sessions) {
        log.warn("max_sessions reached; closing");
        return client.end();
      }
      sessions += 1;
      sessionStarted = true;
      const a = current.approved;
      deps.audit.startSession({ id: connId, uid, account: username, target: a.targetName, source });
      if (loginIdentity) {
        active.set(connId, {
          identity: loginIdentity,
          alias: parseAccount(username).alias,
          targetName: a.targetName,
          end: (why) => {
            terminated = why;
            client.end();
          },
        });
      }
      upstream = openUpstream(a);
      upstream.then(
        (c) => {
          upstreamClient = c;
          c.on("close", () => client.end());
          remoteForwards(c);
        },
        () => undefined,
      );
    });

    const openUpstream = (a: ApprovedTarget): Promise<UpstreamClient> => {
      const started = deps.now();
      return connectUpstream({
        name: a.targetName,
        host: a.target.host,
        port: a.target.port,
        username: a.login,
        privateKey: deps.egressKey,
        hostKey: parseHostKeyLine(a.target.host_key),
        timeoutMs: deps.policy().gateway.upstream_timeout,
        agent: a.route.allow.agent_forwarding ? relayAgent(client, () => agentRequested) : undefined,
      }).then(
        (c) => {
          log.info({ target: a.targetName, ms: deps.now() - started }, "upstream connected");
          metrics.upstreamSeconds((deps.now() - started) / 1000);
          return c;
        },
        (err: Error) => {
          const mismatch = err instanceof HostKeyMismatchError;
          deps.audit.append({
            type: mismatch ? "host_key_mismatch" : "upstream_refused",
            sessionId: connId,
            uid,
            account: username,
            target: a.targetName,
            source,
            result: mismatch ? "host_key_mismatch" : "unreachable",
            data: mismatch ? { presented: (err as HostKeyMismatchError).presented } : { error: err.message },
          });
          log.warn({ target: a.targetName, err: err.message }, mismatch ? "upstream host key mismatch" : "upstream failed");
          throw err;
        },
      );
    };

    const upstreamFailureText = (err: unknown) =>
      err instanceof HostKeyMismatchError ? HOST_KEY_CHANGED_MESSAGE : TARGET_UNREACHABLE_MESSAGE;

    client.on("session", (acceptSession) => {
      const session: Session = acceptSession();
      let pty: PseudoTtyInfo | undefined;
      const env: Record<string, string> = {};
      let upCh: ClientChannel | undefined;
      const current = decision;
      const route = current?.kind === "approved" ? current.approved.route : undefined;

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
      session.on("x11", (_accept, reject) => reject?.());
      let sessionAgent = false;
      session.on("auth-agent", (accept, reject) => {
        if (route?.allow.agent_forwarding) {
          agentRequested = true;
          sessionAgent = true;
          deps.audit.append({ type: "forward", sessionId: connId, uid, data: { agent: true } });
          accept?.();
        } else reject?.();
      });

      const start = (kind: "shell" | "exec" | "subsystem", down: ServerChannel | undefined, arg: string) => {
        if (!down) return;
        if (!current || current.kind === "refused") {
          refuseOnChannel(down, refusalMessage(username, uid, current?.aliases ?? []));
          return;
        }
        const a = current.approved;
        const verdict = authorizeChannel(
          a.route,
          kind === "shell" ? { type: "shell" } : kind === "exec" ? { type: "exec", command: arg } : { type: "subsystem", name: arg },
        );
        if (!verdict.allow) {
          deps.audit.append({
            type: "channel_refused",
            sessionId: connId,
            uid,
            target: a.targetName,
            result: "not_allowed",
            data: { kind, what: verdict.what, ...(kind === "exec" ? { command: arg } : {}) },
          });
          refuseOnChannel(down, `varco: ${verdict.reason} on ${username}.\r\n`);
          return;
        }
        deps.audit.append({
          type: kind,
          sessionId: connId,
          uid,
          target: a.targetName,
          data:
            kind === "exec"
              ? { command: arg, pty: Boolean(pty) }
              : kind === "subsystem"
                ? { name: arg }
                : { pty: Boolean(pty), term: pty?.term },
        });
        const ready = upstream ?? Promise.reject(new Error("no upstream"));
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
                counters[dir] += n;
                lastActivity = deps.now();
              };
              const channelNo = ++channelCounter;
              const audit = createChannelAudit({
                audit: deps.audit,
                recordingsDir: deps.recordingsDir(),
                sessionId: connId,
                channel: channelNo,
                uid,
                account: username,
                target: a.targetName,
                kind,
                arg,
                command: verdict.command,
                pty: pty ? { cols: pty.cols, rows: pty.rows, term: pty.term } : undefined,
                record: a.route.record,
                now: deps.now,
                terminate: (reason) => {
                  terminated = reason;
                  down.stderr.write(`\r\nvarco: ${reason}; the session is terminated.\r\n`, () => client.end());
                },
                log: (msg, fields) => log.warn(fields, msg),
              });
              resizeRecording = audit.resize;
              return relaySession(down, ch, count, { up: audit.up, down: audit.down }).then(async (exit: ExitInfo | undefined) => {
                if (exit?.kind === "status") lastExit = exit.code;
                await audit.close(mine);
                metrics.bytes("up", mine.up);
                metrics.bytes("down", mine.down);
                log.info(
                  {
                    kind,
                    exit_status: exit?.kind === "status" ? exit.code : null,
                    exit_signal: exit?.kind === "signal" ? exit.signal : null,
                    up: mine.up,
                    down: mine.down,
                  },
                  "channel closed",
                );
              });
            },
            (err: unknown) => {
              const text = upstream ? upstreamFailureText(err) : TARGET_UNREACHABLE_MESSAGE;
              if (!(err instanceof HostKeyMismatchError) && upstreamClient) {
                log.warn({ err: (err as Error).message }, "upstream refused the channel");
                refuseOnChannel(down, `varco: the target refused the ${kind} request.\r\n`);
                return;
              }
              refuseOnChannel(down, text);
            },
          );
      };

      session.on("shell", (accept) => start("shell", accept(), ""));
      session.on("exec", (accept, _reject, info) => start("exec", accept(), info.command));
      session.on("subsystem", (accept, _reject, info) => start("subsystem", accept(), info.name));
    });

    client.on("tcpip", (accept, reject, info) => {
      const current = decision;
      if (current?.kind !== "approved" || !current.approved.route.allow.port_forwarding || !upstream) {
        deps.audit.append({
          type: "channel_refused",
          sessionId: connId,
          uid,
          result: "not_allowed",
          data: { kind: "direct-tcpip", host: info.destIP, port: info.destPort },
        });
        return reject();
      }
      deps.audit.append({
        type: "forward",
        sessionId: connId,
        uid,
        target: current.approved.targetName,
        data: { host: info.destIP, port: info.destPort },
      });
      upstream
        .then(
          (up) =>
            new Promise<ClientChannel>((resolve, rej) =>
              up.forwardOut(info.srcIP, info.srcPort, info.destIP, info.destPort, (err, ch) => (err ? rej(err) : resolve(ch))),
            ),
        )
        .then(
          (ch) => {
            relayStream(accept(), ch, countBytes);
          },
          () => reject(),
        );
    });

    // Remote forwarding (ssh -R, RFC 4254 §7.1): the listener opens on the target, where the user's
    // VM is, and each connection to it comes back as a forwarded-tcpip channel to the user.
    client.on("request", (accept, reject, name, info) => {
      const current = decision;
      const allowed = current?.kind === "approved" && current.approved.route.allow.port_forwarding && upstream !== undefined;
      if ((name !== "tcpip-forward" && name !== "cancel-tcpip-forward") || !allowed || !upstream) {
        deps.audit.append({ type: "channel_refused", sessionId: connId, uid, result: "not_allowed", data: { kind: name } });
        return reject?.();
      }
      const { bindAddr, bindPort } = info as { bindAddr: string; bindPort: number };
      void upstream.then(
        (up) => {
          if (name === "cancel-tcpip-forward") {
            up.unforwardIn(bindAddr, bindPort, (err) => (err ? reject?.() : accept?.()));
            return;
          }
          up.forwardIn(bindAddr, bindPort, (err, port) => {
            if (err) return reject?.();
            deps.audit.append({
              type: "forward",
              sessionId: connId,
              uid,
              target: current?.kind === "approved" ? current.approved.targetName : undefined,
              data: { remote: true, bind: bindAddr, port },
            });
            (accept as ((port?: number) => void) | undefined)?.(port);
          });
        },
        () => reject?.(),
      );
    });
    const remoteForwards = (up: UpstreamClient) =>
      up.on("tcp connection", (details, acceptUp, rejectUp) => {
        client.forwardOut(details.destIP, details.destPort, details.srcIP, details.srcPort, (err, down) => {
          if (err) return rejectUp();
          relayStream(down, acceptUp(), countBytes);
        });
      });
    client.on("error", (err) => log.debug({ err: err.message }, "downstream error"));

    const idleMs = limits.idle_timeout;
    const idleTimer = setInterval(
      () => {
        if (authed && deps.now() - lastActivity > idleMs) {
          log.info("idle_timeout; closing");
          client.end();
        }
      },
      Math.min(Math.max(idleMs / 10, 1000), 60_000),
    );
    idleTimer.unref();

    client.on("close", () => {
      active.delete(connId);
      clearInterval(idleTimer);
      leaveUnauth();
      connections.delete(client);
      upstream?.then(
        (c) => c.end(),
        () => undefined,
      );
      if (sessionStarted) {
        sessions -= 1;
        let result = "ok";
        if (!upstreamClient) result = "upstream_failed";
        if (terminated) result = "terminated";
        deps.audit.endSession(connId, { result, upBytes: counters.up, downBytes: counters.down, exitStatus: lastExit });
        log.info({ up: counters.up, down: counters.down, exit_status: lastExit }, "session ended");
      }
    });
  };

  return {
    async listen(addresses) {
      const bound: AddressInfo[] = [];
      for (const a of addresses) {
        const hp = parseHostPort(a);
        if (!hp) throw new Error(`not a host:port: ${a}`);
        const { host, port } = hp;
        // The policy's banner is sent before authentication (RFC 4252 §5.4, SSH_MSG_USERAUTH_BANNER).
        const banner = deps.policy().gateway.banner;
        const ssh = new ssh2.Server({ hostKeys: [...deps.hostKeys], ident: "varco", ...(banner ? { banner } : {}) }, onConnection);
        const server = createServer((socket) => guardSocket(socket, ssh));
        servers.push(server);
        await new Promise<void>((resolve, reject) => {
          server.once("error", reject);
          server.listen(port, host, () => {
            server.off("error", reject);
            resolve();
          });
        });
        bound.push(server.address() as AddressInfo);
      }
      return bound;
    },
    policyChanged() {
      const policy = deps.policy();
      let affected = 0;
      for (const [id, s] of active) {
        const d = resolveRoute(policy, s.identity, s.alias);
        if (d.kind === "approved" && d.approved.targetName === s.targetName) continue;
        affected += 1;
        const action = policy.gateway.on_route_removed;
        deps.audit.append({ type: "route_removed", sessionId: id, uid: s.identity.uid, target: s.targetName, result: action });
        deps.logger.warn({ conn: id, uid: s.identity.uid, target: s.targetName, action }, "a reload removed the route of a live session");
        if (action === "terminate") s.end("route_removed");
      }
      return affected;
    },
    async close(drainMs = 0) {
      const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      // Graceful: let routed sessions finish on their own, bounded by drainMs.
      for (let waited = 0; waited < drainMs && active.size > 0; waited += 100) await new Promise((r) => setTimeout(r, 100));
      for (const c of connections) c.end();
      // Bounded wait (5 s) for every connection's close handler (which writes the session_end row).
      for (let i = 0; i < 100 && connections.size > 0; i++) await new Promise((r) => setTimeout(r, 50));
      await closed;
    },
    stats: () => ({ connections: connections.size, unauthenticated, sessions }),
  };
}
