/**
 * One event stream per downstream connection. The connection says what happened, once; the
 * subscribers here turn it into an audit row, a log line and metrics. Call sites never write to
 * the audit, the log and the metrics separately.
 */
import type { AuditEventInput, AuditSink } from "../audit/index.ts";
import type { LoginEvent } from "../auth/index.ts";
import type { GatewayMetrics, Logger } from "../obs/index.ts";

export type ConnectionEvent =
  | LoginEvent
  | {
      readonly type: "route_refused";
      readonly uid: string;
      readonly account: string;
      readonly reason: string;
      readonly aliases: readonly string[];
    }
  | { readonly type: "upstream_connected"; readonly target: string; readonly ms: number }
  | {
      readonly type: "upstream_failed";
      readonly uid: string;
      readonly account: string;
      readonly target: string;
      readonly error: string;
      /** The host key the target presented when it did not match the pinned one. */
      readonly presented?: string | undefined;
    }
  | { readonly type: "channel_refused"; readonly uid: string; readonly target?: string | undefined; readonly data: Record<string, unknown> }
  | {
      readonly type: "channel_open";
      readonly kind: "shell" | "exec" | "subsystem";
      readonly uid: string;
      readonly target: string;
      readonly data: Record<string, unknown>;
    }
  | {
      readonly type: "channel_closed";
      readonly kind: string;
      readonly up: number;
      readonly down: number;
      readonly exitStatus: number | null;
      readonly exitSignal: string | null;
    }
  | { readonly type: "forward"; readonly uid: string; readonly target?: string | undefined; readonly data: Record<string, unknown> }
  | {
      /** The target menu of a login without an alias ended: a choice (`ok`), a choice refused on re-check, or no choice (`quit`). */
      readonly type: "menu_choice";
      readonly uid: string;
      /** The SSH user name as typed (no alias). */
      readonly account: string;
      readonly result: "ok" | "refused" | "quit";
      readonly alias?: string | undefined;
      readonly target?: string | undefined;
      /** Why the menu was left (`q`, `ctrl_c`, `ctrl_d`, `eof`, `too_much_input`), for `quit`. */
      readonly reason?: string | undefined;
    }
  | { readonly type: "closing"; readonly reason: string }
  | { readonly type: "route_removed"; readonly uid: string; readonly target: string; readonly action: string };

export interface ConnectionEventsDeps {
  readonly audit: AuditSink;
  readonly log: Logger;
  readonly metrics: GatewayMetrics;
  readonly connId: string;
  /** The client's address as shown (v4-mapped prefix stripped). */
  readonly source: string;
  readonly now: () => number;
}

/** The subscribers of one connection's events: audit, log, metrics. */
export function connectionEvents(d: ConnectionEventsDeps): (e: ConnectionEvent) => void {
  const { audit, log, metrics, connId: sessionId, source } = d;
  const startedAt = d.now();
  const authSeconds = () => metrics.authSeconds((d.now() - startedAt) / 1000);
  const row = (e: AuditEventInput) => audit.append({ sessionId, source, ...e });
  return (e) => {
    switch (e.type) {
      case "login_refused":
        row({ type: "login_refused", uid: e.uid, account: e.account, result: e.reason });
        log.info({ account: e.account, uid: e.uid, reason: e.reason }, "login refused");
        metrics.login(e.reason);
        if (e.reason === "directory_unavailable") metrics.ldapError();
        authSeconds();
        return;
      case "locked_attempt":
        // Counted by the lockout (one summary row per minute), not a row per attempt.
        log.debug({ account: e.account, uid: e.uid }, "login refused while locked");
        metrics.login("locked");
        return;
      case "lock":
        row({
          type: "lock",
          uid: e.uid,
          result: e.result,
          data: { reason: e.result === "uid_locked" ? "auth.lockout.max_failures" : "auth.lockout.max_failures_per_source" },
        });
        log.warn({ uid: e.uid, result: e.result }, "lockout");
        return;
      case "login":
        row({
          type: "login",
          uid: e.uid,
          account: e.account,
          result: "ok",
          data: {
            factors: e.factors,
            break_glass: e.breakGlass,
            ...(e.remembered ? { remembered: e.remembered } : {}),
            ...(e.rememberUntil ? { remember_until: new Date(e.rememberUntil).toISOString() } : {}),
          },
        });
        if (e.breakGlass) row({ type: "break_glass", uid: e.uid, account: e.account, result: "ok" });
        log.info({ account: e.account, uid: e.uid, factors: e.factors, break_glass: e.breakGlass }, "login ok");
        metrics.login("ok");
        authSeconds();
        return;
      case "mfa_remembered":
        row({
          type: "mfa_remembered",
          uid: e.uid,
          account: e.account,
          result: "ok",
          data: {
            key_fingerprint: e.keyFingerprint,
            source_net: e.sourceNet,
            remembered_at: new Date(e.rememberedAt).toISOString(),
            expires_at: new Date(e.expiresAt).toISOString(),
          },
        });
        log.info({ uid: e.uid, key_fingerprint: e.keyFingerprint, source_net: e.sourceNet }, "second factor remembered");
        return;
      case "recovery_code_used":
        row({ type: "recovery_code_used", uid: e.uid, result: "ok" });
        return;
      case "enrolled":
        row({ type: "enrolled", uid: e.uid, result: "ok", data: { recovery_codes: e.recoveryCodes } });
        log.info({ uid: e.uid }, "second factor enrolled");
        return;
      case "route_refused":
        row({ type: "route_refused", uid: e.uid, account: e.account, result: e.reason, data: { allowed_aliases: e.aliases } });
        log.info({ account: e.account, reason: e.reason }, "route refused");
        return;
      case "upstream_connected":
        log.info({ target: e.target, ms: e.ms }, "upstream connected");
        metrics.upstreamSeconds(e.ms / 1000);
        return;
      case "upstream_failed": {
        const mismatch = e.presented !== undefined;
        row({
          type: mismatch ? "host_key_mismatch" : "upstream_refused",
          uid: e.uid,
          account: e.account,
          target: e.target,
          result: mismatch ? "host_key_mismatch" : "unreachable",
          data: mismatch ? { presented: e.presented } : { error: e.error },
        });
        log.warn({ target: e.target, err: e.error }, mismatch ? "upstream host key mismatch" : "upstream failed");
        return;
      }
      case "channel_refused":
        row({ type: "channel_refused", uid: e.uid, target: e.target, result: "not_allowed", data: e.data });
        log.info({ ...e.data }, "channel refused");
        return;
      case "channel_open":
        row({ type: e.kind, uid: e.uid, target: e.target, data: e.data });
        return;
      case "channel_closed":
        metrics.bytes("up", e.up);
        metrics.bytes("down", e.down);
        log.info({ kind: e.kind, exit_status: e.exitStatus, exit_signal: e.exitSignal, up: e.up, down: e.down }, "channel closed");
        return;
      case "forward":
        row({ type: "forward", uid: e.uid, target: e.target, data: e.data });
        return;
      case "menu_choice":
        row({
          type: "menu_choice",
          uid: e.uid,
          account: e.account,
          target: e.target,
          result: e.result,
          data: {
            via: "menu",
            ...(e.alias !== undefined ? { alias: e.alias } : {}),
            ...(e.reason !== undefined ? { reason: e.reason } : {}),
          },
        });
        log.info({ account: e.account, result: e.result, alias: e.alias, target: e.target, reason: e.reason }, "target menu");
        return;
      case "closing":
        log.info({ reason: e.reason }, `${e.reason}; closing`);
        return;
      case "route_removed":
        row({ type: "route_removed", uid: e.uid, target: e.target, result: e.action });
        log.warn({ uid: e.uid, target: e.target, action: e.action }, "a reload removed the route of a live session");
        return;
    }
  };
}
