/**
 * LDAP directory (ldapts): service bind → search the user by the typed name (escaped per RFC 4515 §3)
 * → read the entry's own uid (the canonical uid), its account-status attributes and groups → bind as
 * the user's DN with the password. Unknown users run the same operations against dummy names, so the
 * operations (and their timing) do not tell whether a user exists.
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { isIP } from "node:net";
import { dirname, join } from "node:path";
import { Client, Filter, FilterParser, InvalidCredentialsError, NoSuchObjectError } from "ldapts";

export interface LdapConfig {
  readonly url: string;
  readonly bindDn: string;
  /** The service account's password (read from its secret file; never logged). */
  readonly bindPassword: string;
  readonly userBase: string;
  /** Filter with `{uid}` (the name as typed); the value is escaped before substitution. */
  readonly userFilter: string;
  /**
   * The attribute whose value in the user's entry is the canonical uid returned in every verdict
   * (directory.ldap.uid_attribute; default `uid`, Active Directory `sAMAccountName`). An entry with
   * it missing or multi-valued is refused.
   */
  readonly uidAttribute?: string | undefined;
  /**
   * An extra filter the user's entry must match to log in by any method (directory.ldap.account_filter),
   * tested with a base-scope search on the entry. Placeholders (escaped): `{uid}` (canonical), `{dn}`,
   * `{now_days}` (days since 1970, shadowExpire's unit), `{now_filetime}` (100 ns since 1601, AD's
   * accountExpires), `{now_gentime}` (GeneralizedTime, `YYYYMMDDHHMMSSZ`). The built-in status checks
   * ({@link accountStatusProblem}) apply with or without it.
   */
  readonly accountFilter?: string | undefined;
  readonly groupBase?: string | undefined;
  /** Filter with `{uid}` (canonical) and/or `{dn}`; both escaped. */
  readonly groupFilter: string;
  /** Take groups from this attribute of the user entry (memberOf), as the first RDN value of each DN. */
  readonly groupAttribute?: string | undefined;
  /** Attribute with the user's SSH public keys (openssh-lpk sshPublicKey). */
  readonly sshKeyAttribute: string;
  /** Attribute holding the user's base32 TOTP secret (auth.totp.secrets: ldap, e.g. oathSecret). */
  readonly totpAttribute?: string | undefined;
  readonly caFile?: string | undefined;
  readonly startTls: boolean;
  /** Per-operation and connect timeout, ms. */
  readonly timeoutMs: number;
  /** Clock for the expiry checks, ms since the epoch (default `Date.now`). */
  readonly now?: (() => number) | undefined;
}

/**
 * What the directory says about a uid (+ password). `uid` is always the entry's own value of the uid
 * attribute, never the typed name. `reason` is for the log and the audit only (never the client).
 */
export type DirectoryVerdict =
  | {
      readonly kind: "ok";
      readonly uid: string;
      readonly dn: string;
      readonly groups: readonly string[];
      readonly sshKeys: readonly string[];
      /** The TOTP secret from the directory (only with totpAttribute). Never log it. */
      readonly totpSecret?: string | undefined;
    }
  /** The account exists but is disabled, locked or expired (audit: `account_inactive`). */
  | { readonly kind: "inactive"; readonly uid: string; readonly dn: string; readonly reason: string }
  /** Unknown user, ambiguous match, unusable entry, or wrong password. */
  | { readonly kind: "invalid"; readonly reason: string };

/** The directory could not be asked (down, timeout, TLS failure, service bind refused). */
export class DirectoryUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DirectoryUnavailableError";
  }
}

export interface Directory {
  /**
   * Checks a password. Never throws for a wrong password or unknown user (both → `invalid`); an
   * inactive account is `inactive` whatever the password (the directory refuses its bind anyway).
   * @throws DirectoryUnavailableError when the directory cannot answer.
   */
  verifyPassword(uid: string, password: string): Promise<DirectoryVerdict>;
  /**
   * Looks up a user without a password (after publickey logins, for directory TOTP secrets): the
   * canonical uid, groups, keys, and the same account-status checks as `verifyPassword`.
   * @throws DirectoryUnavailableError when the directory cannot answer.
   */
  lookup(uid: string): Promise<DirectoryVerdict>;
  /** Binds as the service account and unbinds: is the directory answering? @throws DirectoryUnavailableError */
  ping(): Promise<void>;
}

/**
 * Account-status attributes read with every user search. Naming an attribute the server's schema does
 * not know in the attribute list is harmless (RFC 4511 §4.5.1.8: it is ignored), unlike naming it in a
 * filter (§4.5.1.7: Undefined, and NOT Undefined is Undefined, so the entry would never match).
 */
export const STATUS_ATTRIBUTES = [
  "pwdAccountLockedTime",
  "shadowExpire",
  "nsAccountLock",
  "userAccountControl",
  "msDS-User-Account-Control-Computed",
  "accountExpires",
] as const;

const DAY_MS = 86_400_000;
/** 100 ns intervals between 1601-01-01 and 1970-01-01 (Windows FILETIME epoch). */
const FILETIME_UNIX_EPOCH = 116_444_736_000_000_000n;
const ACCOUNTEXPIRES_NEVER = 9_223_372_036_854_775_807n;
const UF_ACCOUNTDISABLE = 0x2n;
const UF_LOCKOUT = 0x10n;

/** Days since 1970-01-01 UTC (the unit of shadowExpire, shadow(5)). */
export function epochDays(nowMs: number): number {
  return Math.floor(nowMs / DAY_MS);
}

/** Windows FILETIME (100 ns intervals since 1601-01-01 UTC; AD accountExpires, [MS-ADA1] 2.16). */
export function fileTime(nowMs: number): bigint {
  return BigInt(Math.floor(nowMs)) * 10_000n + FILETIME_UNIX_EPOCH;
}

/** GeneralizedTime in UTC without fractions (RFC 4517 §3.3.13): `20261128171500Z`. */
export function generalizedTime(nowMs: number): string {
  return `${new Date(nowMs).toISOString().replace(/[-:T]/g, "").slice(0, 14)}Z`;
}

const bigintOf = (s: string): bigint | undefined => (/^-?\d{1,20}$/.test(s.trim()) ? BigInt(s.trim()) : undefined);

/**
 * The built-in account-status checks, evaluated in code on the attributes of {@link STATUS_ATTRIBUTES}
 * (so a directory without one of these schemas simply has no such attribute and is not affected).
 * Returns why the account may not log in, or `undefined` when none of the checks refuses it. A value
 * that does not parse refuses the account (fail closed). Attribute names match case-insensitively.
 * - `pwdAccountLockedTime` present (OpenLDAP/OpenDJ ppolicy, draft-behera-ldap-password-policy §5.3.3):
 *   locked. varco cannot know pwdLockoutDuration, so a lock whose duration has run out still refuses
 *   until the server removes the attribute (slapo-ppolicy(5): at the next successful bind) or an
 *   administrator deletes it; it does not rely on the server enforcing ppolicy at bind time.
 * - `shadowExpire` ≥ 0 and today (days since 1970 UTC) ≥ it: expired (shadow(5), as pam_unix reads it; -1 = never).
 * - `nsAccountLock` = `true` (case-insensitive; 389 Directory Server / FreeIPA account inactivation).
 * - `userAccountControl` with bit 0x2 ACCOUNTDISABLE, or `msDS-User-Account-Control-Computed` with 0x10
 *   UF_LOCKOUT (Active Directory, [MS-ADTS] 2.2.16).
 * - `accountExpires` neither 0 nor 0x7FFFFFFFFFFFFFFF and ≤ now as FILETIME (AD, [MS-ADA1] 2.16).
 */
export function accountStatusProblem(entry: Readonly<Record<string, unknown>>, nowMs: number): string | undefined {
  if (attributeValues(entry, "pwdAccountLockedTime").length > 0) return "locked by the password policy (pwdAccountLockedTime)";
  for (const v of attributeValues(entry, "shadowExpire")) {
    const days = bigintOf(v);
    if (days === undefined) return "shadowExpire does not parse";
    if (days >= 0n && BigInt(epochDays(nowMs)) >= days) return `expired (shadowExpire ${days})`;
  }
  for (const v of attributeValues(entry, "nsAccountLock")) if (v.trim().toLowerCase() === "true") return "inactivated (nsAccountLock)";
  for (const v of attributeValues(entry, "userAccountControl")) {
    const flags = bigintOf(v);
    if (flags === undefined) return "userAccountControl does not parse";
    if (flags & UF_ACCOUNTDISABLE) return "disabled (userAccountControl ACCOUNTDISABLE)";
  }
  for (const v of attributeValues(entry, "msDS-User-Account-Control-Computed")) {
    const flags = bigintOf(v);
    if (flags === undefined) return "msDS-User-Account-Control-Computed does not parse";
    if (flags & UF_LOCKOUT) return "locked out (msDS-User-Account-Control-Computed UF_LOCKOUT)";
  }
  for (const v of attributeValues(entry, "accountExpires")) {
    const t = bigintOf(v);
    if (t === undefined) return "accountExpires does not parse";
    if (t !== 0n && t !== ACCOUNTEXPIRES_NEVER && t <= fileTime(nowMs)) return "expired (accountExpires)";
  }
  return undefined;
}

/** Placeholders `directory.ldap.account_filter` may use. */
export const ACCOUNT_FILTER_PLACEHOLDERS = ["uid", "dn", "now_days", "now_filetime", "now_gentime"] as const;

/**
 * Why a canonical uid read from the directory cannot be used, or `undefined`. Refused: empty, longer
 * than 256 characters, surrounding white space, control characters (C0, DEL, C1).
 */
export function canonicalUidProblem(uid: string): string | undefined {
  if (uid.length === 0) return "is empty";
  if (uid.length > 256) return "is longer than 256 characters";
  if (uid.trim() !== uid) return "has surrounding white space";
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this refuses
  if (/[\u0000-\u001f\u007f-\u009f]/.test(uid)) return "contains control characters";
  return undefined;
}

/** Substitutes `{name}` placeholders with RFC 4515-escaped values. */
export function fillFilter(template: string, values: Readonly<Record<string, string>>): string {
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => {
    const v = values[name];
    return v === undefined ? whole : Filter.escape(v);
  });
}

/**
 * The values of attribute `name` in an ldapts entry, matched case-insensitively (servers answer with
 * their own spelling of the name, RFC 4512 §2.5), as strings (Buffers decoded as UTF-8).
 */
export function attributeValues(entry: Readonly<Record<string, unknown>>, name: string): string[] {
  const want = name.toLowerCase();
  const out: string[] = [];
  for (const [k, v] of Object.entries(entry)) {
    if (k === "dn" || k.toLowerCase() !== want || v === undefined || v === null) continue;
    for (const x of Array.isArray(v) ? v : [v]) out.push(Buffer.isBuffer(x) ? x.toString("utf8") : String(x));
  }
  return out;
}

/** The value of a DN's first RDN: `cn=astro,ou=groups,…` → `astro`. */
export function firstRdnValue(dn: string): string | undefined {
  const m = /^[^=]+=((?:\\.|[^,\\])*)/.exec(dn);
  return m?.[1]?.replace(/\\(.)/g, "$1");
}

/** The placeholder values for account_filter at `nowMs`. */
function filterValues(uid: string, dn: string, nowMs: number): Record<string, string> {
  return { uid, dn, now_days: String(epochDays(nowMs)), now_filetime: String(fileTime(nowMs)), now_gentime: generalizedTime(nowMs) };
}

/**
 * Checks an account_filter template: known placeholders only, and once filled, a filter ldapts can
 * encode (RFC 4515 string form). @throws Error naming the problem
 */
export function checkAccountFilter(template: string): void {
  for (const m of template.matchAll(/\{(\w+)\}/g)) {
    if (!(ACCOUNT_FILTER_PLACEHOLDERS as readonly string[]).includes(m[1] ?? ""))
      throw new Error(
        `directory.ldap.account_filter: unknown placeholder {${m[1]}} (known: ${ACCOUNT_FILTER_PLACEHOLDERS.map((p) => `{${p}}`).join(", ")})`,
      );
  }
  try {
    FilterParser.parseString(fillFilter(template, filterValues("u", "uid=u,dc=example", 0)));
  } catch (err) {
    throw new Error(`directory.ldap.account_filter: not an LDAP filter: ${(err as Error).message}`);
  }
}

/** What one service-account pass over a user found (before any password bind). */
interface Found {
  readonly dn: string;
  readonly uid: string;
  readonly entry: Readonly<Record<string, unknown>>;
  readonly groups: string[];
  /** account_filter did not match the entry. */
  readonly filterRefused: boolean;
}

/** The attribute names a filter tests (extensible matches: the attribute before the rule, if any). */
export function filterAttributes(filter: string): string[] {
  const out = new Set<string>();
  const walk = (f: unknown) => {
    const o = f as { filters?: unknown[]; filter?: unknown; attribute?: unknown; matchType?: unknown };
    if (Array.isArray(o.filters)) for (const x of o.filters) walk(x);
    if (o.filter) walk(o.filter);
    if (typeof o.attribute === "string" && o.attribute) out.add(o.attribute);
    if (typeof o.matchType === "string" && o.matchType) out.add(o.matchType);
  };
  walk(FilterParser.parseString(filter));
  return [...out];
}

/** Names and OIDs (lower case) of the attribute types in subschema `attributeTypes` values (RFC 4512 §4.1.2). */
function schemaNames(definitions: readonly string[]): Set<string> {
  const names = new Set<string>();
  for (const d of definitions) {
    const oid = /^\(\s*([\w.-]+)/.exec(d)?.[1];
    if (oid) names.add(oid.toLowerCase());
    const m = /\sNAME\s+(\([^)]*\)|'[^']*')/.exec(d);
    for (const n of m?.[1]?.matchAll(/'([^']*)'/g) ?? []) if (n[1]) names.add(n[1].toLowerCase());
  }
  return names;
}

/** An LDAP directory, plus a schema check for `varco doctor`. */
export interface LdapDirectory extends Directory {
  /**
   * The attribute types named by uid_attribute and account_filter that the server's schema (root DSE
   * subschemaSubentry → attributeTypes, RFC 4512 §5.1, §4.2) does not define: with any of them,
   * every user would be refused. @throws DirectoryUnavailableError
   */
  unknownAttributes(): Promise<string[]>;
}

/** Creates an LDAP directory client. Each call opens its own connections (no shared state between logins). @throws Error on an invalid accountFilter */
/** The ldapts version patches/ldapts+8.2.0.patch is written for (pinned exactly in package.json). */
export const LDAPTS_VERSION = "8.2.0";

/**
 * Checks that the installed ldapts carries varco's patch (applied at install by patch-package): its
 * message parser reads the messages of one received chunk in a loop. Upstream recursed once per
 * message, so a directory answering with thousands of small messages at once overflowed the stack
 * inside the socket's 'data' handler, an uncaught exception that ended the gateway.
 * @throws Error naming the file and the fix (reinstall with `npm ci`).
 */
export function assertLdaptsPatched(): void {
  if (ldaptsChecked) return;
  // ldapts' "exports" do not list package.json: from its entry point (dist/index.*) up one folder.
  const dir = dirname(dirname(createRequire(import.meta.url).resolve("ldapts")));
  const version = (JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { version?: string }).version;
  const file = join(dir, "dist/index.mjs");
  if (version !== LDAPTS_VERSION || !readFileSync(file, "utf8").includes("A loop, not one recursive call per message"))
    throw new Error(
      `ldapts ${version} at ${dir} lacks varco's patch for ${LDAPTS_VERSION} (patches/ldapts+8.2.0.patch): reinstall with npm ci`,
    );
  ldaptsChecked = true;
}
/** The installed ldapts does not change under a running process: checked once, not at every reload. */
let ldaptsChecked = false;

export function createLdapDirectory(cfg: LdapConfig): LdapDirectory {
  assertLdaptsPatched();
  const uidAttribute = cfg.uidAttribute ?? "uid";
  const now = cfg.now ?? Date.now;
  if (cfg.accountFilter !== undefined) checkAccountFilter(cfg.accountFilter);
  const tlsOptions = cfg.caFile ? { ca: [readFileSync(cfg.caFile)] } : undefined;
  const urlHost = new URL(cfg.url).hostname.replace(/^\[|\]$/g, "");
  /** A fresh options object per upgrade (ldapts stores the socket in it), naming the host to check the certificate against. */
  const startTlsOptions = () => ({ ...(tlsOptions ?? {}), host: urlHost, ...(isIP(urlHost) ? {} : { servername: urlHost }) });
  const newClient = (): Client =>
    // tlsOptions on the client means "connect with TLS": only for ldaps://; StartTLS gets them at the upgrade.
    new Client({
      url: cfg.url,
      timeout: cfg.timeoutMs,
      connectTimeout: cfg.timeoutMs,
      ...(cfg.url.startsWith("ldaps:") ? { tlsOptions } : {}),
      strictDN: false,
    });
  /** A DN and uid that name no entry, for the operations an unknown user must still cost. */
  const dummy = () => {
    const uid = `varco-no-such-user-${randomUUID()}`;
    return { uid, dn: `uid=${uid},${cfg.userBase}` };
  };

  const withService = async <T>(fn: (c: Client) => Promise<T>): Promise<T> => {
    const client = newClient();
    try {
      if (cfg.startTls) await client.startTLS(startTlsOptions());
      await client.bind(cfg.bindDn, cfg.bindPassword);
      return await fn(client);
    } catch (err) {
      throw new DirectoryUnavailableError(`LDAP ${cfg.url}: ${(err as Error).message}`, { cause: err });
    } finally {
      await client.unbind().catch(() => undefined);
    }
  };

  /**
   * One service pass: user search → group search → account_filter base search. Every step runs for
   * known and unknown users alike (with a dummy dn/uid), so both cost the same operations.
   * Returns the entry, or the reason it is not usable.
   */
  const find = (typed: string) =>
    withService(async (c): Promise<Found | { refused: string }> => {
      const { searchEntries } = await c.search(cfg.userBase, {
        scope: "sub",
        filter: fillFilter(cfg.userFilter, { uid: typed }),
        attributes: [
          "dn",
          uidAttribute,
          cfg.sshKeyAttribute,
          ...STATUS_ATTRIBUTES,
          ...(cfg.groupAttribute ? [cfg.groupAttribute] : []),
          ...(cfg.totpAttribute ? [cfg.totpAttribute] : []),
        ],
        sizeLimit: 2,
      });
      let refused: string | undefined;
      let entry: (Record<string, unknown> & { dn: string }) | undefined;
      let uid: string | undefined;
      if (searchEntries.length === 0) refused = "no entry matches user_filter";
      else if (searchEntries.length > 1) refused = "more than one entry matches user_filter";
      else {
        entry = searchEntries[0] as Record<string, unknown> & { dn: string };
        const uids = attributeValues(entry, uidAttribute);
        const problem = uids.length === 1 ? canonicalUidProblem(uids[0] ?? "") : undefined;
        if (uids.length !== 1) refused = `${entry.dn}: ${uidAttribute} has ${uids.length} values (exactly one is needed)`;
        else if (problem) refused = `${entry.dn}: ${uidAttribute} ${problem}`;
        else uid = uids[0];
      }
      const who = entry && uid !== undefined ? { uid, dn: entry.dn } : dummy();
      let groups: string[] = [];
      if (cfg.groupAttribute) {
        groups = attributeValues(entry ?? {}, cfg.groupAttribute)
          .map(firstRdnValue)
          .filter((g): g is string => g !== undefined);
      } else if (cfg.groupBase) {
        const res = await c.search(cfg.groupBase, {
          scope: "sub",
          filter: fillFilter(cfg.groupFilter, { uid: who.uid, dn: who.dn }),
          attributes: ["cn"],
        });
        groups = res.searchEntries.map((e) => attributeValues(e, "cn")[0]).filter((g): g is string => g !== undefined);
      }
      let filterRefused = false;
      if (cfg.accountFilter !== undefined) {
        try {
          const res = await c.search(who.dn, {
            scope: "base",
            filter: fillFilter(cfg.accountFilter, filterValues(who.uid, who.dn, now())),
            attributes: ["1.1"],
          });
          filterRefused = res.searchEntries.length !== 1;
        } catch (err) {
          // The dummy DN does not exist (RFC 4511 §4.1.9 noSuchObject): the cost an unknown user pays.
          if (!(err instanceof NoSuchObjectError)) throw err;
          filterRefused = true;
        }
      }
      if (refused !== undefined || !entry || uid === undefined) return { refused: refused ?? "no entry" };
      return { dn: entry.dn, uid, entry, groups, filterRefused };
    });

  /** The verdict for a found entry, before any password check. */
  const verdict = (f: Found): DirectoryVerdict => {
    const problem = f.filterRefused ? "does not match directory.ldap.account_filter" : accountStatusProblem(f.entry, now());
    if (problem) return { kind: "inactive", uid: f.uid, dn: f.dn, reason: problem };
    const totpSecret = cfg.totpAttribute ? attributeValues(f.entry, cfg.totpAttribute)[0] : undefined;
    return { kind: "ok", uid: f.uid, dn: f.dn, groups: f.groups, sshKeys: attributeValues(f.entry, cfg.sshKeyAttribute), totpSecret };
  };

  return {
    async verifyPassword(typed, password) {
      const found = await find(typed);
      // An empty password would be an unauthenticated bind (RFC 4513 §5.1.2) and "succeed": refuse it here.
      if (password.length === 0) return { kind: "invalid", reason: "empty password" };
      // An unknown user still costs a bind, so timing does not tell whether the user exists.
      const dn = "refused" in found ? dummy().dn : found.dn;
      const client = newClient();
      let bindError: unknown;
      try {
        if (cfg.startTls) await client.startTLS(startTlsOptions());
        await client.bind(dn, password);
      } catch (err) {
        bindError = err;
      } finally {
        await client.unbind().catch(() => undefined);
      }
      const v = "refused" in found ? undefined : verdict(found);
      // An inactive account's status is the answer whatever its bind said (a locked account's bind fails anyway).
      if (v?.kind === "inactive") return v;
      if (bindError !== undefined && !(bindError instanceof InvalidCredentialsError))
        throw new DirectoryUnavailableError(`LDAP ${cfg.url}: user bind failed: ${(bindError as Error).message}`, { cause: bindError });
      if ("refused" in found) return { kind: "invalid", reason: found.refused };
      if (bindError !== undefined || !v) return { kind: "invalid", reason: "wrong password" };
      return v;
    },
    ping: () => withService(async () => undefined),
    unknownAttributes: () =>
      withService(async (c) => {
        const wanted = [
          uidAttribute,
          ...(cfg.accountFilter ? filterAttributes(fillFilter(cfg.accountFilter, filterValues("u", "uid=u", 0))) : []),
        ];
        const root = await c.search("", { scope: "base", filter: "(objectClass=*)", attributes: ["subschemaSubentry"] });
        const sub = attributeValues(root.searchEntries[0] ?? {}, "subschemaSubentry")[0];
        if (!sub) throw new Error("the root DSE names no subschemaSubentry");
        const schema = await c.search(sub, { scope: "base", filter: "(objectClass=subschema)", attributes: ["attributeTypes"] });
        const known = schemaNames(attributeValues(schema.searchEntries[0] ?? {}, "attributeTypes"));
        return [...new Set(wanted)].filter((a) => !known.has(a.toLowerCase()));
      }),
    async lookup(typed) {
      const found = await find(typed);
      return "refused" in found ? { kind: "invalid", reason: found.refused } : verdict(found);
    },
  };
}
