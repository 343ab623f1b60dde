/**
 * The login state machine of one downstream connection (RFC 4252): it turns what the client
 * submits — `none`, `password`, `publickey`, a keyboard-interactive round (RFC 4256) and its
 * answers — into what to answer, and it is the only code that can mint an `AuthenticatedIdentity`.
 * It knows nothing of ssh2: the SSH adapter maps ssh2's auth contexts onto `submit()` and the
 * returned step back onto the wire. Every check goes through the injected `LoginFactors`.
 *
 * Rules it enforces:
 * - the typed name passes `checkAccountSyntax` before any lookup; after that, the directory's
 *   canonical uid (`Account.uid`) is the identity for TOTP, lockout, routes and audit;
 * - a factor that fails where the protocol would reveal it (a password before a code) is hidden:
 *   the client sees partial success and the verdict is given once the chain's last factor was
 *   answered, so response and timing do not confirm a password without the second factor;
 * - every refusal looks the same to the client, forgets every factor already passed, and is
 *   counted; `maxAttempts` unsuccessful requests (key probes included) end the connection;
 * - an aborted keyboard-interactive round changes nothing and never completes a login;
 * - a remembered second factor (`auth.totp.remember`, src/auth/remember.ts) stands in for `totp`
 *   only in a chain that also holds `publickey`, only after that key passed in this login (and the
 *   lockout was checked first), and only for the (canonical uid, key, source network) remembered;
 *   it is never refreshed by a login that used it.
 */
import type { AuthMethod } from "../policy/index.ts";
import type { RememberedRow } from "../state/index.ts";
import { checkAccountSyntax, truncateUtf8 } from "./account.ts";
import { chainRemembers, keyFingerprint, rememberNetwork } from "./remember.ts";

export const PASSWORD_PROMPT = "Password: ";
export const CODE_PROMPT = "Verification code: ";

const MINT = Symbol("varco.login.mint");

/** Proof that every factor of an auth chain passed. Only a completed `Login` makes one. */
export class AuthenticatedIdentity {
  /** The canonical uid: the directory entry's own value (or the break-glass user's configured uid). */
  readonly uid: string;
  readonly groups: readonly string[];
  /** The factors that were completed, in chain order (e.g. ["password", "totp"]). */
  readonly factors: readonly AuthMethod[];
  /** Logged in as a break-glass local user. */
  readonly breakGlass: boolean;
  /** Factors of `factors` that a remembered entry stood in for (not checked in this login): [] or ["totp"]. */
  readonly remembered: readonly AuthMethod[];
  constructor(
    token: symbol,
    uid: string,
    groups: readonly string[],
    factors: readonly AuthMethod[],
    breakGlass: boolean,
    remembered: readonly AuthMethod[] = [],
  ) {
    if (token !== MINT) throw new TypeError("an AuthenticatedIdentity is only made by a completed login");
    this.uid = uid;
    this.groups = Object.freeze([...groups]);
    this.factors = Object.freeze([...factors]);
    this.breakGlass = breakGlass;
    this.remembered = Object.freeze([...remembered]);
    Object.freeze(this);
  }
}

/** What the factor checks know of a user once the typed uid is resolved. */
export interface Account {
  /** Canonical uid (directory attribute `uid_attribute`, or the local user's configured uid). */
  readonly uid: string;
  readonly groups: readonly string[];
  /** A break-glass local user. */
  readonly local: boolean;
  /** False when the directory's account-status check says disabled, locked or expired. */
  readonly active: boolean;
}

export type AccountLookup<A extends Account> =
  | { readonly kind: "found"; readonly account: A }
  | { readonly kind: "unknown" }
  | { readonly kind: "unavailable"; readonly reason: string };

/** A password check: `inactive` when the directory says the account is disabled, locked or expired. */
export type FactorVerdict = "ok" | "invalid" | "inactive" | { readonly unavailable: string };

export interface Enrolment {
  readonly secret: string;
  readonly uri: string;
  /** The otpauth URI as a QR code drawn with Unicode half blocks. */
  readonly qr: string;
}

/**
 * The checks a login is made of. Failures are verdicts; an implementation rejects only when it
 * cannot decide (the login state is unreachable), and the login then fails closed (the caller logs the error).
 * Lockout and enrolment checks may answer synchronously or with a promise.
 */
export interface LoginFactors<A extends Account = Account> {
  /** Resolves a syntax-checked typed uid (the login caches the answer per connection). */
  lookup(typedUid: string): Promise<AccountLookup<A>>;
  /**
   * Checks a password; `account` undefined (unknown user: `typedUid` is what was typed) still costs
   * what a known user costs. "ok" means the account is also active (the directory applied its own
   * lockout rules to the bind).
   */
  password(account: A | undefined, typedUid: string, password: string): Promise<FactorVerdict>;
  /** Whether `key` is authorized for `account` (and, when `signed`, the signature over `blob` is good). */
  publickey(
    account: A,
    key: { algo: string; data: Buffer },
    signed?: { blob: Buffer; signature: Buffer; hashAlgo?: string | undefined },
  ): Promise<boolean>;
  hasTotp(account: A): boolean | Promise<boolean>;
  /**
   * Checks a TOTP code, else a recovery code; `account` undefined costs the same. With `consume`,
   * a valid code's step (or the recovery code) is used up atomically — only one caller wins;
   * without, nothing changes. A login checks every factor first and consumes only when all passed.
   */
  totp(account: A | undefined, code: string, nowMs: number, consume: boolean): Promise<"ok" | "recovery" | "invalid">;
  /** auth.totp.enrol_on_first_login (and secrets kept by varco). */
  readonly enrolOnFirstLogin: boolean;
  /** Whether `code` is a valid, unexpired enrolment invitation for the account (does not consume it). */
  invitationValid(account: A, code: string, nowMs: number): boolean | Promise<boolean>;
  enrolment(account: A): Promise<Enrolment>;
  /**
   * Consumes the invitation and stores `secret` if `code` is valid for it; returns the new recovery
   * codes, or undefined (wrong code, invitation used meanwhile, already enrolled).
   */
  confirmEnrolment(account: A, secret: string, code: string, invitation: string, nowMs: number): Promise<string[] | undefined>;
  /** Lockout: `key` is the canonical uid (or the typed uid of an unknown user). */
  locked(key: string, source: string, nowMs: number): boolean | Promise<boolean>;
  failed(
    key: string,
    source: string,
    nowMs: number,
  ): { lockedUid: boolean; lockedSource: boolean } | Promise<{ lockedUid: boolean; lockedSource: boolean }>;
  /** A refused attempt while locked: counted, no row per attempt. */
  lockedAttempt(key: string, source: string, nowMs: number): void | Promise<void>;
  succeeded(key: string): void | Promise<void>;
  /**
   * `auth.totp.remember` (absent or answering undefined: off). The remembered entry that lets
   * `account` with the key of fingerprint `keyFp` from `sourceNet` skip the code at `nowMs`, or
   * undefined. May reject (state unreachable): the login then asks for the code.
   */
  rememberedFactor?(account: A, keyFp: string, sourceNet: string, nowMs: number): Promise<RememberedRow | undefined>;
  /**
   * Remembers the second factor of `account` after a full login with that key from that network;
   * returns the entry stored, or undefined when remembering is off. May reject (the login still completes).
   */
  rememberFactor?(account: A, keyFp: string, sourceNet: string, nowMs: number): Promise<RememberedRow | undefined>;
}

/** What the client submitted in one SSH_MSG_USERAUTH_REQUEST (or INFO_RESPONSE). */
export type Credential =
  | { readonly method: "none" }
  | { readonly method: "password"; readonly password: string; readonly newPassword?: string | undefined }
  | {
      readonly method: "publickey";
      readonly key: { algo: string; data: Buffer };
      readonly signed?: { blob: Buffer; signature: Buffer; hashAlgo?: string | undefined } | undefined;
    }
  | { readonly method: "keyboard-interactive" }
  /** Answers to the last prompt; undefined when the client aborted the round (RFC 4256 §3.4). */
  | { readonly method: "answers"; readonly answers: readonly string[] | undefined }
  | { readonly method: "other" };

export interface Prompt {
  readonly prompt: string;
  readonly echo: boolean;
}

/** What to answer. */
export type LoginStep =
  /** SSH_MSG_USERAUTH_FAILURE with the methods that can continue (RFC 4252 §5.1). */
  | { readonly kind: "continue"; readonly methods: readonly string[]; readonly partial: boolean }
  /** SSH_MSG_USERAUTH_PK_OK: this key would do (RFC 4252 §7). */
  | { readonly kind: "pk_ok" }
  /** SSH_MSG_USERAUTH_INFO_REQUEST (RFC 4256 §3.2). */
  | { readonly kind: "prompt"; readonly title: string; readonly instructions: string; readonly prompts: readonly Prompt[] }
  | {
      readonly kind: "accepted";
      readonly identity: AuthenticatedIdentity;
      readonly alias: string | undefined;
      /** The SSH user name as typed, at most 256 bytes. */
      readonly account: string;
    }
  /** Too many attempts: send a failure and end the connection. */
  | { readonly kind: "disconnect"; readonly methods: readonly string[] }
  /** An aborted round: nothing to send. */
  | { readonly kind: "ignore" };

/** What the login tells the connection's event stream (audit, log and metrics subscribe to it). */
export type LoginEvent =
  | { readonly type: "login_refused"; readonly uid: string; readonly account: string; readonly reason: string }
  | { readonly type: "locked_attempt"; readonly uid: string; readonly account: string }
  | { readonly type: "lock"; readonly uid: string; readonly result: "uid_locked" | "source_locked" }
  | {
      readonly type: "login";
      readonly uid: string;
      readonly account: string;
      /** The factors checked in this login, in chain order (a remembered `totp` is not among them). */
      readonly factors: readonly AuthMethod[];
      readonly breakGlass: boolean;
      /** Factors of the completed chain a remembered entry stood in for (absent: none). */
      readonly remembered?: readonly AuthMethod[] | undefined;
      /** This login remembered its second factor until then (ms since the epoch). */
      readonly rememberUntil?: number | undefined;
    }
  /** A remembered second factor stood in for the code (`auth.totp.remember`); on every use. */
  | {
      readonly type: "mfa_remembered";
      readonly uid: string;
      readonly account: string;
      /** SHA-256 fingerprint of the public key that authenticated (`SHA256:…`). */
      readonly keyFingerprint: string;
      /** The source network the entry is bound to (`192.0.2.0/24`, `2001:db8::/64`). */
      readonly sourceNet: string;
      /** When the entry was made (the full login), ms since the epoch. */
      readonly rememberedAt: number;
      /** When it expires, ms since the epoch. */
      readonly expiresAt: number;
    }
  | { readonly type: "recovery_code_used"; readonly uid: string }
  | { readonly type: "enrolled"; readonly uid: string; readonly recoveryCodes: number };

export interface LoginOptions<A extends Account> {
  readonly factors: LoginFactors<A>;
  /** auth.chains: any one must be completed. */
  readonly chains: readonly (readonly AuthMethod[])[];
  /** gateway.limits.max_auth_attempts. */
  readonly maxAttempts: number;
  /** auth.uid_pattern. */
  readonly uidPattern: RegExp;
  /** The client's address, for lockout. */
  readonly source: string;
  readonly now: () => number;
  readonly emit: (e: LoginEvent) => void;
}

export interface Login {
  /** Handles one request for `username`; serialised internally (one at a time, in order). */
  submit(username: string, credential: Credential): Promise<LoginStep>;
  /** The connection closed: a hidden failure not yet refused is counted now. */
  abandon(): void;
  /** Unsuccessful requests so far. */
  readonly attempts: number;
}

type Round =
  | { readonly kind: "factors"; readonly askPassword: boolean; readonly askCode: boolean }
  | { readonly kind: "enrol"; readonly secret: string; readonly invitation: string }
  | { readonly kind: "recovery" };

const ENROL_TITLE = "varco: set up your second factor";

/** Creates the login state machine for one connection. */
export function createLogin<A extends Account>(o: LoginOptions<A>): Login {
  const { factors } = o;
  let attempts = 0;
  /** Everything below belongs to one user name; another name starts over. */
  let username: string | undefined;
  let typedUid = "";
  let alias: string | undefined;
  let syntaxError: string | undefined;
  const done = new Set<AuthMethod>();
  /** A failed factor not told to the client yet (the password before the code). */
  let hidden: string | undefined;
  /** Fingerprint of the public key that passed under this user name (cleared with `done`). */
  let keyFp: string | undefined;
  /** The remembered entry standing in for `totp` in chains that hold `publickey` (cleared with `done`). */
  let rememberedEntry: RememberedRow | undefined;
  let account: A | undefined;
  let round: Round | undefined;
  /** Directory answers per typed uid on this connection (a handful at most). */
  const lookups = new Map<string, Promise<AccountLookup<A>>>();
  let queue: Promise<unknown> = Promise.resolve();

  /** A remembered entry counts as `totp` only in a chain that also holds `publickey` (never for password-only chains). */
  const passed = (chain: readonly AuthMethod[], f: AuthMethod) =>
    done.has(f) || (f === "totp" && rememberedEntry !== undefined && chainRemembers(chain) && done.has("publickey"));
  const remaining = (chain: readonly AuthMethod[]) => chain.filter((f) => !passed(chain, f));
  const wanted = (f: AuthMethod) => o.chains.some((c) => remaining(c).includes(f));
  const nextMethods = (): string[] => {
    const m = new Set<string>();
    for (const c of o.chains) {
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
  /** The password/totp factors one keyboard-interactive round asks: the closest chain's. */
  const kbdFactors = (): AuthMethod[] | undefined =>
    o.chains
      .map(remaining)
      .filter((r) => r.length > 0 && r.every((f) => f === "password" || f === "totp"))
      .sort((a, b) => a.length - b.length)[0];

  const account256 = () => truncateUtf8(username ?? "");
  const lockKey = () => account?.uid ?? typedUid.toLowerCase();
  const auditUid = () => account?.uid ?? truncateUtf8(typedUid, 64);

  const reset = () => {
    done.clear();
    hidden = undefined;
    round = undefined;
    keyFp = undefined;
    rememberedEntry = undefined;
  };
  const startOver = async (name: string) => {
    // A guess under the previous name is counted before it is forgotten.
    if (hidden !== undefined) await refuse(hidden);
    username = name;
    reset();
    account = undefined;
    const syntax = checkAccountSyntax(name, o.uidPattern);
    if (syntax.ok) {
      typedUid = syntax.uid;
      alias = syntax.alias;
      syntaxError = undefined;
    } else {
      typedUid = "";
      alias = undefined;
      syntaxError = syntax.reason;
    }
  };

  const failStep = (): LoginStep => {
    attempts += 1;
    return attempts >= o.maxAttempts
      ? { kind: "disconnect", methods: nextMethods() }
      : { kind: "continue", methods: nextMethods(), partial: false };
  };

  /**
   * Every refusal looks the same to the client; the reason goes to the event stream only. A hidden
   * failure still pending (a wrong password answered with partial success) is what is refused then,
   * and it always counts: no later request may make a password guess free.
   */
  const refuse = async (why: string, counted = true): Promise<LoginStep> => {
    const reason = hidden ?? why;
    const count = counted || hidden !== undefined;
    const uid = auditUid();
    reset();
    if (count) {
      // Counted at once (before any await): a disconnect right after still counts the guess.
      const counting = factors.failed(lockKey(), o.source, o.now());
      o.emit({ type: "login_refused", uid, account: account256(), reason });
      const lock = await counting;
      if (lock.lockedUid) o.emit({ type: "lock", uid, result: "uid_locked" });
      if (lock.lockedSource) o.emit({ type: "lock", uid, result: "source_locked" });
    } else {
      o.emit({ type: "login_refused", uid, account: account256(), reason });
    }
    return failStep();
  };

  const lockedStep = async (): Promise<LoginStep> => {
    await factors.lockedAttempt(lockKey(), o.source, o.now());
    o.emit({ type: "locked_attempt", uid: auditUid(), account: account256() });
    reset();
    return failStep();
  };

  /** Resolves the typed uid once per connection. */
  const resolve = async (): Promise<AccountLookup<A>> => {
    let p = lookups.get(typedUid);
    if (!p) {
      if (lookups.size >= 4) lookups.clear();
      p = factors.lookup(typedUid);
      lookups.set(typedUid, p);
      // An unavailable directory is not remembered: the next request asks again.
      void p.then((r) => {
        if (r.kind === "unavailable") lookups.delete(typedUid);
      });
    }
    const r = await p;
    if (r.kind === "found") account = r.account;
    return r;
  };

  /** After factors passed: accept if a chain is complete, else partial success (RFC 4252 §5.1). */
  const progress = async (): Promise<LoginStep> => {
    const chain = o.chains.find((c) => remaining(c).length === 0);
    if (!chain) return { kind: "continue", methods: nextMethods(), partial: true };
    if (hidden !== undefined) return refuse(hidden);
    if (!account) return refuse("unknown_user");
    // A password the directory accepted means an active account (it applied its own lockout rules to
    // the bind, e.g. slapo-ppolicy clears an expired lock); without one, the lookup's status decides.
    if (!done.has("password") && !account.active) return refuse("account_inactive");
    const skipped = chain.filter((f) => !done.has(f));
    const identity = new AuthenticatedIdentity(MINT, account.uid, account.groups, chain, account.local, skipped);
    await factors.succeeded(account.uid);
    if (rememberedEntry && skipped.length > 0) {
      o.emit({
        type: "mfa_remembered",
        uid: account.uid,
        account: account256(),
        keyFingerprint: rememberedEntry.keyFp,
        sourceNet: rememberedEntry.sourceNet,
        rememberedAt: rememberedEntry.createdAtMs,
        expiresAt: rememberedEntry.expiresAtMs,
      });
    }
    // Only a login that checked the key and the code of a key chain itself (re)starts the period: a
    // remembered one never extends it.
    const keyChainChecked = o.chains.some((c) => chainRemembers(c) && c.every((f) => done.has(f)));
    const stored = skipped.length === 0 && keyChainChecked ? await rememberNow(account) : undefined;
    o.emit({
      type: "login",
      uid: account.uid,
      account: account256(),
      factors: chain.filter((f) => done.has(f)),
      breakGlass: account.local,
      ...(skipped.length > 0 ? { remembered: skipped } : {}),
      ...(stored ? { rememberUntil: stored.expiresAtMs } : {}),
    });
    reset();
    return { kind: "accepted", identity, alias, account: account256() };
  };

  const byPassword = async (c: Extract<Credential, { method: "password" }>): Promise<LoginStep> => {
    // RFC 4252 §8 password change: varco never changes directory passwords.
    if (c.newPassword !== undefined) return refuse("password_change_refused", false);
    if (!wanted("password")) return refuse("password_not_wanted", false);
    // An empty password is never right (and would be an unauthenticated LDAP bind, RFC 4513 §5.1.2):
    // refusing it at once tells nothing.
    if (c.password.length === 0) return refuse("bad_password");
    const found = await resolve();
    if (found.kind === "unavailable") return refuse("directory_unavailable", false);
    if (await factors.locked(lockKey(), o.source, o.now())) return lockedStep();
    const v = await factors.password(account, typedUid, c.password);
    if (typeof v === "object") return refuse("directory_unavailable", false);
    const why = v === "inactive" ? "account_inactive" : v !== "ok" ? "bad_password" : undefined;
    if (why) hidden ??= why;
    done.add("password");
    return progress();
  };

  /** Stores the remembered factor after a full login; a failure to store changes nothing (the code is asked next time). */
  const rememberNow = async (a: A): Promise<RememberedRow | undefined> => {
    const net = rememberNetwork(o.source);
    if (!factors.rememberFactor || keyFp === undefined || net === undefined || a.local) return undefined;
    return factors.rememberFactor(a, keyFp, net, o.now()).catch(() => undefined);
  };

  /**
   * After the key passed (the lockout was checked before it): a remembered entry for (uid, this
   * key, this network) stands in for `totp` in the chains that hold `publickey`. A lookup that
   * fails asks for the code.
   */
  const lookupRemembered = async (): Promise<void> => {
    const net = rememberNetwork(o.source);
    if (!factors.rememberedFactor || !account || account.local || keyFp === undefined || net === undefined) return;
    if (!o.chains.some((c) => chainRemembers(c) && !done.has("totp"))) return;
    const entry = await factors.rememberedFactor(account, keyFp, net, o.now()).catch(() => undefined);
    if (entry && entry.uid === account.uid && entry.keyFp === keyFp && entry.sourceNet === net) rememberedEntry = entry;
  };

  const byPublickey = async (c: Extract<Credential, { method: "publickey" }>): Promise<LoginStep> => {
    if (!wanted("publickey")) return failStep();
    const found = await resolve();
    if (found.kind !== "unavailable" && (await factors.locked(lockKey(), o.source, o.now()))) {
      return c.signed ? lockedStep() : failStep();
    }
    const ok = account?.active === true && (await factors.publickey(account, c.key, c.signed));
    // A probe ("would this key do?", RFC 4252 §7) is counted as an attempt when refused, not as a lockout failure.
    if (!c.signed) return ok ? { kind: "pk_ok" } : failStep();
    if (!ok) return refuse(account && !account.active ? "account_inactive" : "bad_publickey");
    done.add("publickey");
    keyFp = keyFingerprint(c.key.data);
    await lookupRemembered();
    return progress();
  };

  const startRound = (): LoginStep => {
    const want = kbdFactors();
    if (!want) return { kind: "continue", methods: nextMethods(), partial: false };
    const askPassword = want.includes("password");
    const askCode = want.includes("totp");
    round = { kind: "factors", askPassword, askCode };
    const prompts = [
      ...(askPassword ? [{ prompt: PASSWORD_PROMPT, echo: false }] : []),
      ...(askCode ? [{ prompt: CODE_PROMPT, echo: false }] : []),
    ];
    return { kind: "prompt", title: "", instructions: "", prompts };
  };

  const answerFactors = async (r: Extract<Round, { kind: "factors" }>, answers: readonly string[]): Promise<LoginStep> => {
    if (syntaxError) return refuse(syntaxError);
    const found = await resolve();
    if (found.kind === "unavailable") return refuse("directory_unavailable", false);
    if (await factors.locked(lockKey(), o.source, o.now())) return lockedStep();
    let i = 0;
    const password = r.askPassword ? (answers[i++] ?? "") : undefined;
    const code = r.askCode ? (answers[i++] ?? "").trim() : undefined;
    const enrolling = code !== undefined && account !== undefined && factors.enrolOnFirstLogin && !(await factors.hasTotp(account));
    // Both factors are evaluated before anything is decided (no early exit on a wrong password).
    const [pw, second] = await Promise.all([
      password === undefined ? Promise.resolve<FactorVerdict>("ok") : factors.password(account, typedUid, password),
      code === undefined
        ? Promise.resolve("ok" as const)
        : enrolling && account
          ? Promise.resolve(factors.invitationValid(account, code, o.now())).then((v) =>
              v ? ("invitation" as const) : ("no_invitation" as const),
            )
          : factors.totp(account, code, o.now(), false),
    ]);
    if (typeof pw === "object") return refuse("directory_unavailable", false);
    if (hidden !== undefined) return refuse(hidden);
    if (pw === "inactive") return refuse("account_inactive");
    if (pw !== "ok") return refuse("bad_password");
    if (password === undefined && account && !account.active) return refuse("account_inactive");
    if (second === "invalid") return refuse(account && !(await factors.hasTotp(account)) ? "no_totp_secret" : "bad_code");
    if (second === "no_invitation") return refuse("no_enrolment_invitation");
    if (password !== undefined) done.add("password");
    if (second === "invitation" && account && code !== undefined) {
      const e = await factors.enrolment(account);
      round = { kind: "enrol", secret: e.secret, invitation: code };
      const instructions = `No second factor is set up for ${account.uid} yet. Scan this QR code with an authenticator app, or add the key by hand:\n${e.qr}\n${e.uri}\n`;
      return { kind: "prompt", title: ENROL_TITLE, instructions, prompts: [{ prompt: CODE_PROMPT, echo: false }] };
    }
    if (code !== undefined && account) {
      // Every factor passed: now use the code up (compare-and-set; a racing login with it loses).
      const used = await factors.totp(account, code, o.now(), true);
      if (used === "invalid") return refuse("bad_code");
      if (used === "recovery") o.emit({ type: "recovery_code_used", uid: account.uid });
      done.add("totp");
    }
    return progress();
  };

  const answerEnrolment = async (r: Extract<Round, { kind: "enrol" }>, answers: readonly string[]): Promise<LoginStep> => {
    if (!account) return refuse("unknown_user");
    const codes = await factors.confirmEnrolment(account, r.secret, (answers[0] ?? "").trim(), r.invitation, o.now());
    if (!codes) return refuse("enrolment_code_wrong");
    o.emit({ type: "enrolled", uid: account.uid, recoveryCodes: codes.length });
    done.add("totp");
    round = { kind: "recovery" };
    const text = `Second factor set up. Keep these single-use recovery codes somewhere safe; each replaces a code once:\n${codes.join("  ")}\n`;
    return {
      kind: "prompt",
      title: "varco: recovery codes",
      instructions: text,
      prompts: [{ prompt: "Press Enter once you have saved them: ", echo: true }],
    };
  };

  const handle = async (name: string, c: Credential): Promise<LoginStep> => {
    if (name !== username) await startOver(name);
    if (c.method === "answers") {
      const r = round;
      round = undefined;
      if (!r || c.answers === undefined) return { kind: "ignore" };
      if (r.kind === "factors") return answerFactors(r, c.answers);
      if (r.kind === "enrol") return answerEnrolment(r, c.answers);
      return progress();
    }
    // A new request abandons any round in progress (RFC 4256 §3.4).
    round = undefined;
    if (c.method === "none" || c.method === "other") return { kind: "continue", methods: nextMethods(), partial: false };
    if (syntaxError) {
      // Refused before any directory call; counted per source only.
      return c.method === "keyboard-interactive" ? startRound() : refuse(syntaxError);
    }
    if (c.method === "password") return byPassword(c);
    if (c.method === "publickey") return byPublickey(c);
    return startRound();
  };

  return {
    submit(name, credential) {
      const next = queue.then(
        () => handle(name, credential),
        () => handle(name, credential),
      );
      queue = next.catch(() => undefined);
      return next;
    },
    abandon() {
      // The failure is counted synchronously (refuse calls `failed` before its first await).
      if (hidden !== undefined) void refuse(hidden).catch(() => undefined);
    },
    get attempts() {
      return attempts;
    },
  };
}
