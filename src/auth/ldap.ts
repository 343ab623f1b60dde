/**
 * LDAP directory (ldapts): service bind → search the user (uid escaped per RFC 4515 §3) →
 * bind as the user's DN with the password → read group names (cn).
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { Client, Filter, InvalidCredentialsError } from "ldapts";

export interface LdapConfig {
  readonly url: string;
  readonly bindDn: string;
  /** The service account's password (read from its secret file; never logged). */
  readonly bindPassword: string;
  readonly userBase: string;
  /** Filter with `{uid}`; the value is escaped before substitution. */
  readonly userFilter: string;
  readonly groupBase?: string | undefined;
  /** Filter with `{uid}` and/or `{dn}`; both escaped. */
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
}

/** What the directory says about a uid + password. */
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
  | { readonly kind: "invalid" };

/** The directory could not be asked (down, timeout, TLS failure, service bind refused). */
export class DirectoryUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DirectoryUnavailableError";
  }
}

export interface Directory {
  /**
   * Checks a password. Never throws for a wrong password or unknown user (both → `invalid`).
   * @throws DirectoryUnavailableError when the directory cannot answer.
   */
  verifyPassword(uid: string, password: string): Promise<DirectoryVerdict>;
  /** Looks up a user's groups without a password (used after publickey logins). */
  lookup(uid: string): Promise<DirectoryVerdict>;
  /** Binds as the service account and unbinds: is the directory answering? @throws DirectoryUnavailableError */
  ping(): Promise<void>;
}

/** Substitutes `{name}` placeholders with RFC 4515-escaped values. */
export function fillFilter(template: string, values: Readonly<Record<string, string>>): string {
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => {
    const v = values[name];
    return v === undefined ? whole : Filter.escape(v);
  });
}

function strings(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  return list.map((x) => (Buffer.isBuffer(x) ? x.toString("utf8") : String(x)));
}

/** The value of a DN's first RDN: `cn=astro,ou=groups,…` → `astro`. */
export function firstRdnValue(dn: string): string | undefined {
  const m = /^[^=]+=((?:\\.|[^,\\])*)/.exec(dn);
  return m?.[1]?.replace(/\\(.)/g, "$1");
}

function firstString(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (Array.isArray(v) && typeof v[0] === "string") return v[0];
  if (Buffer.isBuffer(v)) return v.toString("utf8");
  return undefined;
}

/** Creates an LDAP directory client. Each call opens its own connections (no shared state between logins). */
export function createLdapDirectory(cfg: LdapConfig): Directory {
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

  const find = (uid: string) =>
    withService(async (c) => {
      const { searchEntries } = await c.search(cfg.userBase, {
        scope: "sub",
        filter: fillFilter(cfg.userFilter, { uid }),
        attributes: [
          "dn",
          cfg.sshKeyAttribute,
          ...(cfg.groupAttribute ? [cfg.groupAttribute] : []),
          ...(cfg.totpAttribute ? [cfg.totpAttribute] : []),
        ],
        sizeLimit: 2,
      });
      if (searchEntries.length !== 1) return undefined;
      const entry = searchEntries[0] as Record<string, unknown> & { dn: string };
      const dn = entry.dn;
      const sshKeys = strings(entry[cfg.sshKeyAttribute]);
      const totpSecret = cfg.totpAttribute ? strings(entry[cfg.totpAttribute])[0] : undefined;
      let groups: string[] = [];
      if (cfg.groupAttribute) {
        groups = strings(entry[cfg.groupAttribute])
          .map(firstRdnValue)
          .filter((g): g is string => g !== undefined);
      } else if (cfg.groupBase) {
        const res = await c.search(cfg.groupBase, {
          scope: "sub",
          filter: fillFilter(cfg.groupFilter, { uid, dn }),
          attributes: ["cn"],
        });
        groups = res.searchEntries.map((e) => firstString(e.cn)).filter((g): g is string => g !== undefined);
      }
      return { dn, groups, sshKeys, totpSecret };
    });

  return {
    async verifyPassword(uid, password) {
      const found = await find(uid);
      // An empty password would be an unauthenticated bind (RFC 4513 §5.1.2) and "succeed": refuse it here.
      if (password.length === 0) return { kind: "invalid" };
      // An unknown user still costs a bind, so timing does not tell whether the user exists.
      const dn = found?.dn ?? `uid=varco-no-such-user-${randomUUID()},${cfg.userBase}`;
      const client = newClient();
      try {
        if (cfg.startTls) await client.startTLS(startTlsOptions());
        await client.bind(dn, password);
        if (!found) return { kind: "invalid" };
        return { kind: "ok", uid, dn: found.dn, groups: found.groups, sshKeys: found.sshKeys, totpSecret: found.totpSecret };
      } catch (err) {
        if (err instanceof InvalidCredentialsError) return { kind: "invalid" };
        throw new DirectoryUnavailableError(`LDAP ${cfg.url}: user bind failed: ${(err as Error).message}`, { cause: err });
      } finally {
        await client.unbind().catch(() => undefined);
      }
    },
    ping: () => withService(async () => undefined),
    async lookup(uid) {
      const found = await find(uid);
      return found
        ? { kind: "ok", uid, dn: found.dn, groups: found.groups, sshKeys: found.sshKeys, totpSecret: found.totpSecret }
        : { kind: "invalid" };
    },
  };
}
