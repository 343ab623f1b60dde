/**
 * Web console login: the same login state machine as SSH (src/auth/login.ts `createLogin`) with
 * the gateway's own factor checks (`Authenticator`: directory, TOTP with used-step replay
 * protection, lockout), so the canonical uid, lockout and audit are those of an SSH login. The
 * form's password and code are answered as one keyboard-interactive round of the chain
 * `[password, totp]`. After the factors, only members of `web.auditor_groups` / `web.admin_groups`
 * get in; anyone else gets the same refusal as a wrong password (audited with the real reason).
 */
import type { AuditEventInput, AuditEventType } from "../audit/index.ts";
import { createLogin, type LoginEvent, type LoginFactors } from "../auth/index.ts";
import type { WebRole } from "./sessions.ts";

/** The web console's settings as the policy's `web` block gives them (durations in ms). */
export interface WebSettings {
  readonly auditor_groups: readonly string[];
  readonly admin_groups: readonly string[];
  readonly idle_timeout: number;
  /** Canonical names the console answers to (`web.hostnames`); empty: any. */
  readonly hostnames: readonly string[];
  /** Addresses or CIDRs of reverse proxies whose `X-Forwarded-For` is believed (`web.trusted_proxies`). */
  readonly trusted_proxies: readonly string[];
}

/** What a web login needs of the running gateway (read per login, so a reload applies). */
export interface WebLoginRuntime {
  readonly authenticator: LoginFactors;
  readonly uidPattern: RegExp;
}

export type WebLoginResult =
  | { readonly ok: true; readonly uid: string; readonly role: WebRole }
  /** `reason` is for the audit and the log only; the page says the same thing whatever it is. */
  | { readonly ok: false; readonly reason: string };

/** The alias appended to the typed uid so the account syntax (split at the last `_`) keeps the whole uid. */
const WEB_ALIAS = "web";

/** The role of a user with these groups, or undefined when none of the web groups is theirs. Admin wins. */
export function roleOf(groups: readonly string[], s: Pick<WebSettings, "auditor_groups" | "admin_groups">): WebRole | undefined {
  if (s.admin_groups.some((g) => groups.includes(g))) return "admin";
  if (s.auditor_groups.some((g) => groups.includes(g))) return "auditor";
  return undefined;
}

/** An audit event of the web console (types outside the SSH gateway's own list). */
export function webEvent(e: Omit<AuditEventInput, "type"> & { type: string }): AuditEventInput {
  return { ...e, type: e.type as AuditEventType };
}

/**
 * Logs in with a password and a code. Every outcome is appended to `audit` (`web_login`,
 * `web_login_refused` with the reason, `lock`, `recovery_code_used`).
 * @param source the client's address (lockout per source).
 */
export async function webLogin(
  rt: WebLoginRuntime,
  settings: WebSettings,
  form: { uid: string; password: string; code: string },
  source: string,
  audit: (e: AuditEventInput) => void,
  now: () => number,
): Promise<WebLoginResult> {
  const events: LoginEvent[] = [];
  const login = createLogin({
    factors: rt.authenticator,
    chains: [["password", "totp"]],
    maxAttempts: 1,
    uidPattern: rt.uidPattern,
    source,
    now,
    emit: (e) => events.push(e),
  });
  const name = `${form.uid}_${WEB_ALIAS}`;
  const flush = () => {
    for (const e of events.splice(0)) {
      if (e.type === "login_refused")
        audit(webEvent({ type: "web_login_refused", uid: e.uid, source, result: e.reason, data: { via: "web" } }));
      else if (e.type === "locked_attempt") audit(webEvent({ type: "web_login_refused", uid: e.uid, source, result: "locked" }));
      else if (e.type === "lock")
        audit({
          type: "lock",
          uid: e.uid,
          result: e.result,
          data: { via: "web", reason: e.result === "uid_locked" ? "auth.lockout.max_failures" : "auth.lockout.max_failures_per_source" },
        });
      else if (e.type === "recovery_code_used") audit({ type: "recovery_code_used", uid: e.uid, source, data: { via: "web" } });
    }
  };
  try {
    const first = await login.submit(name, { method: "keyboard-interactive" });
    if (first.kind !== "prompt") {
      // The name failed its syntax check before any prompt: refuse it like a wrong password.
      flush();
      audit(webEvent({ type: "web_login_refused", uid: form.uid.slice(0, 64), source, result: "account_syntax" }));
      return { ok: false, reason: "account_syntax" };
    }
    const step = await login.submit(name, { method: "answers", answers: [form.password, form.code] });
    flush();
    if (step.kind !== "accepted") {
      // A prompt here is the enrolment round: a web login never enrols (that happens over SSH).
      if (step.kind === "prompt") {
        login.abandon();
        audit(webEvent({ type: "web_login_refused", uid: form.uid.slice(0, 64), source, result: "no_totp_secret" }));
        return { ok: false, reason: "no_totp_secret" };
      }
      return { ok: false, reason: "refused" };
    }
    const role = roleOf(step.identity.groups, settings);
    if (!role) {
      audit(webEvent({ type: "web_login_refused", uid: step.identity.uid, source, result: "not_in_web_groups" }));
      return { ok: false, reason: "not_in_web_groups" };
    }
    audit(webEvent({ type: "web_login", uid: step.identity.uid, source, result: "ok", data: { role, factors: step.identity.factors } }));
    return { ok: true, uid: step.identity.uid, role };
  } catch (err) {
    flush();
    audit(webEvent({ type: "web_login_refused", uid: form.uid.slice(0, 64), source, result: "error" }));
    return { ok: false, reason: `error: ${(err as Error).message}` };
  }
}
