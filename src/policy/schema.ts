/**
 * The policy file's schema (contract section 2), as zod definitions.
 * Durations are converted to milliseconds and sizes to bytes during validation.
 * Unknown keys are errors everywhere (`z.strictObject`).
 *
 * Every key carries a description (`.describe()`): it is the `description` of the JSON Schema
 * (`varco policy schema`, editors' hovers) and the reference docs/policy.md is generated from it
 * (src/policy/reference.ts), so the meaning of a key is written here and nowhere else.
 */
import { isIP } from "node:net";
import ipaddr from "ipaddr.js";
import { z } from "zod";
import { DEFAULT_UID_PATTERN } from "../auth/account.ts";
import { policyHostName } from "./hostname.ts";
import { parseDurationMs, parseHostPort, parseSizeBytes } from "./units.ts";

/** How a duration is written; `title` names the kind in the JSON Schema and the reference. */
const durationText = z.string().meta({ title: "duration" });

/** A duration string (`30s`, `15m`, `12h`) → milliseconds. */
export const duration = durationText.transform((text, ctx) => {
  const ms = parseDurationMs(text);
  if (ms === undefined) {
    ctx.addIssue({ code: "custom", message: `"${text}" is not a duration; use e.g. 30s, 15m, 12h, 7d` });
    return z.NEVER;
  }
  return ms;
});

/** How a size is written; `title` names the kind in the JSON Schema and the reference. */
const sizeText = z.string().meta({ title: "size" });

/** A size string (`64MiB`) → bytes. */
export const size = sizeText.transform((text, ctx) => {
  const bytes = parseSizeBytes(text);
  if (bytes === undefined) {
    ctx.addIssue({ code: "custom", message: `"${text}" is not a size; use e.g. 512KiB, 64MiB, 1GiB` });
    return z.NEVER;
  }
  return bytes;
});

/**
 * A `duration` whose default is written as in a policy (`"30s"`) and parsed like a written value.
 * Unlike `duration.default(ms)` it keeps the default in the JSON Schema: zod leaves the default of a
 * transforming schema out of an `io: "input"` JSON Schema, since it is an output value.
 */
function durationDefault(text: string) {
  return durationText.default(text).pipe(duration);
}

/** A `size` whose default is written as in a policy (`"64MiB"`); see {@link durationDefault}. */
function sizeDefault(text: string) {
  return sizeText.default(text).pipe(size);
}

/** A plain IPv4/IPv6 address. */
export const ipAddress = z.string().refine((s) => isIP(s) !== 0, { message: "not an IP address" });

/** An address in CIDR notation, or a plain address (treated as /32 or /128). */
export const cidr = z.string().refine(
  (s) => {
    const [addr, len, extra] = s.split("/");
    if (extra !== undefined || addr === undefined) return false;
    const family = isIP(addr);
    if (family === 0) return false;
    if (len === undefined) return true;
    if (!/^\d{1,3}$/.test(len)) return false;
    return Number(len) <= (family === 4 ? 32 : 128);
  },
  { message: "not an address or CIDR prefix (e.g. 10.10.0.0/16)" },
);

/**
 * An address or CIDR of a reverse proxy, as compared with a peer's address (ipaddr.js): no IPv6 zone
 * id (never part of a peer address), and IPv4-mapped IPv6 only in its IPv4 form (peers are compared as IPv4).
 */
const proxyCidr = cidr.superRefine((s, ctx) => {
  const [addr = "", len] = s.split("/");
  if (addr.includes("%")) {
    ctx.addIssue({ code: "custom", message: `write the address without its zone id (%…): ${JSON.stringify(s)}` });
    return;
  }
  if (!ipaddr.isValid(addr)) {
    ctx.addIssue({ code: "custom", message: `not an address ipaddr.js reads: ${JSON.stringify(s)}` });
    return;
  }
  const a = ipaddr.parse(addr);
  if (a.kind() === "ipv6" && (a as ipaddr.IPv6).isIPv4MappedAddress()) {
    const v4 = (a as ipaddr.IPv6).toIPv4Address().toString();
    const prefix = len === undefined ? "" : `/${Math.max(Number(len) - 96, 0)}`;
    ctx.addIssue({ code: "custom", message: `write an IPv4-mapped address in its IPv4 form: ${v4}${prefix}` });
  }
});

/** `host:port`, `[v6]:port`. */
export const listenAddress = z.string().refine(
  (s) => {
    const hp = parseHostPort(s);
    return hp !== undefined && hp.port < 65536 && isIP(hp.host) !== 0;
  },
  { message: 'not a "host:port" listen address (e.g. "0.0.0.0:22", "[::]:22"; port 0 = any free port)' },
);

/** A secret reference: a file path (relative to the policy) or `env:VAR`. Never the secret itself. */
export const secretRef = z.string().min(1);

const port = z.number().int().min(1).max(65535);

const limits = z
  .strictObject({
    max_sessions: z.number().int().positive().default(1000).describe("Logged-in connections at once, all users together."),
    max_unauthenticated: z
      .number()
      .int()
      .positive()
      .default(50)
      .describe("Connections still logging in, all sources together; more are closed at the TCP level, before the SSH banner exchange."),
    max_unauthenticated_per_source: z
      .number()
      .int()
      .positive()
      .default(10)
      .describe("Connections still logging in from one source address."),
    max_auth_attempts: z
      .number()
      .int()
      .positive()
      .default(6)
      .describe("Failed authentication requests on one connection (key probes, RFC 4252 §7, included) before it is closed."),
    /** Channels (sessions and forwarded streams) open at once on one connection. */
    max_channels: z
      .number()
      .int()
      .positive()
      .max(10_000)
      .default(64)
      .describe("Channels open at once on one connection (sessions and forwarded streams)."),
    login_grace: durationDefault("30s").describe("Time to finish logging in; a connection still unauthenticated then is closed."),
    idle_timeout: durationDefault("1h").describe(
      "A session with no data either way for this long is closed (bytes on any channel, forwards included, count as activity).",
    ),
  })
  .describe("Limits on connections and sessions, before and after login; every key has a default.");

/** `tcp://host:port` or `tls://host:port` (host a name or an IP, `[v6]` bracketed) of a remote syslog receiver. */
export const syslogUrl = z.string().refine(
  (s) => {
    // Same grammar as parseSyslogUrl in src/audit/syslog.ts.
    const m = /^(tcp|tls):\/\/(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+)):(\d{1,5})$/.exec(s);
    const port = Number(m?.[4]);
    return m !== null && port >= 1 && port <= 65535 && (m[2] === undefined || isIP(m[2]) === 6);
  },
  { message: 'not a syslog URL (e.g. "tcp://10.0.0.5:514", "tls://logs.example.org:6514", "tcp://[::1]:514")' },
);

/** Remote syslog stream of the audit trail (RFC 5424 over TCP, RFC 6587 octet counting; `tls://` = RFC 5425). */
const auditSyslog = z
  .strictObject({
    url: syslogUrl.describe(
      "`tcp://host:port` or `tls://host:port` of the receiver (host a name or an IP, IPv6 in brackets); with `tls://` its certificate is checked against the host name.",
    ),
    /** PEM CA bundle that signs the receiver's certificate (tls:// only; default: the system CAs). */
    ca_file: z
      .string()
      .min(1)
      .optional()
      .describe("PEM CA bundle that signs the receiver's certificate (`tls://` only; default: the system CAs)."),
    /** RFC 5424 APP-NAME (printable US-ASCII, at most 48 characters). */
    app_name: z
      .string()
      .regex(/^[\x21-\x7e]{1,48}$/, "must be 1-48 printable ASCII characters without spaces")
      .default("varco")
      .describe("RFC 5424 APP-NAME of the messages (1–48 printable ASCII characters, no spaces)."),
  })
  .refine((o) => o.ca_file === undefined || o.url.startsWith("tls://"), { message: "ca_file needs a tls:// url", path: ["ca_file"] });

const gateway = z
  .strictObject({
    listen: z
      .array(listenAddress)
      .min(1)
      .default(["0.0.0.0:22"])
      .describe("Addresses the gateway accepts SSH connections on, as `host:port` (`[::]:22` for IPv6; port 0 = any free port)."),
    host_keys: z
      .array(z.string().min(1))
      .min(1)
      .default(["keys/ssh_host_ed25519_key"])
      .describe(
        "SSH host private keys the gateway presents (relative to the policy, mode 0600), made by `varco keys init`; two nodes behind one VIP share them so clients see one server.",
      ),
    egress_key: z
      .string()
      .min(1)
      .default("keys/egress_ed25519")
      .describe(
        "The gateway's own private key towards targets, made by `varco keys init`; put its `.pub` in each target user's `authorized_keys`.",
      ),
    banner: z
      .string()
      .optional()
      .describe("Text sent to clients before authentication (SSH_MSG_USERAUTH_BANNER, RFC 4252 §5.4); absent = none."),
    state_dir: z
      .string()
      .min(1)
      .default("/var/lib/varco")
      .describe(
        "Folder of the audit database (`audit.db`), the encrypted TOTP secrets (`state.db`, `totp.key`), network generations (`net/`) and, unless `recordings_dir` says otherwise, recordings.",
      ),
    /** Where terminal recordings go (default: <state_dir>/recordings); a separate volume keeps a full disk away from the DB. */
    recordings_dir: z
      .string()
      .min(1)
      .optional()
      .describe(
        "Where terminal recordings go (default `<state_dir>/recordings`); a separate volume keeps a full disk away from the audit database.",
      ),
    /** ed25519 private key (PEM) that signs audit chain checkpoints; keep it off the audit volume. `varco audit keygen` makes one. */
    audit_signing_key: z
      .string()
      .min(1)
      .optional()
      .describe(
        "ed25519 private key (PEM) that signs audit chain checkpoints (checked by `varco audit verify --pubkey`). The key sits on the box, so its owner can re-sign: prefer `audit_seal_state`.",
      ),
    /** How often the chain head is signed when there are new events. */
    audit_checkpoint_interval: durationDefault("60s").describe(
      'How often the chain head is sealed (or signed) when there are new events, and logged as an "audit anchor" line.',
    ),
    /**
     * Forward-secure sealing state file (`varco audit keygen --out FILE`; relative to the policy, mode 0600).
     * Every audit_checkpoint_interval the gateway seals the chain head with it, logs an "audit anchor" line
     * and ratchets the key; the auditor verifies with the key keygen printed once.
     */
    audit_seal_state: z
      .string()
      .min(1)
      .optional()
      .describe(
        "Forward-secure sealing state file (`varco audit keygen --out FILE`, mode 0600): every `audit_checkpoint_interval` the chain head is sealed with it and the key ratcheted; `varco audit verify --seal-key` checks with the key keygen printed once.",
      ),
    /** This gateway's name in audit seals and anchor lines (default: the host name). */
    node: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,253}$/, "must be a host name (letters, digits, '.', '_', '-')")
      .optional()
      .describe("This gateway's name in audit seals, anchor lines and exported events (default: the host name)."),
    /** Streams every committed audit event and every anchor to a remote syslog (absent = off). */
    audit_syslog: auditSyslog
      .optional()
      .describe(
        "Streams every committed audit event and every anchor to a remote syslog: RFC 5424 messages over TCP (RFC 6587 octet counting) or TLS (RFC 5425); absent = off.",
      ),
    limits: limits.prefault({}),
    metrics_listen: listenAddress
      .optional()
      .describe("`host:port` of the HTTP listener for `/healthz` and `/metrics` (Prometheus text), e.g. `127.0.0.1:9108`; absent = off."),
    upstream_timeout: durationDefault("10s").describe("Time to connect to a target and finish the SSH handshake with it."),
    /** What a reload does to a live session whose route it removed: keep it (audited) or close it. */
    on_route_removed: z
      .enum(["keep", "terminate"])
      .default("keep")
      .describe("What a reload does to a live session whose route it removed: `keep` it (audited) or `terminate` it."),
    /** On SIGTERM, how long live sessions may go on before they are closed. */
    stop_timeout: durationDefault("30s").describe("On SIGTERM, how long live sessions may go on before they are closed."),
  })
  .describe(
    "The SSH gateway: listeners, keys, state, audit trail and limits. Changing `listen`, `host_keys`, `egress_key`, `metrics_listen`, `state_dir`, `node` or an `audit_*` key needs a restart: a reload that changes one is refused and the last good policy stays.",
  );

/** Whether the parentheses of an LDAP filter balance (escaped ones are `\28`/`\29`, RFC 4515 §3). */
function balancedParentheses(s: string): boolean {
  let depth = 0;
  for (const ch of s) {
    if (ch === "(") depth++;
    else if (ch === ")" && --depth < 0) return false;
  }
  return depth === 0;
}

const ldap = z
  .strictObject({
    url: z
      .string()
      .regex(/^ldaps?:\/\/.+/, "must start with ldap:// or ldaps://")
      .describe("`ldaps://host:636`, or `ldap://host:389` with `tls.starttls: true`; the server certificate must match this host name."),
    bind_dn: z.string().min(1).describe("DN of the service account that searches users and groups."),
    bind_password_file: secretRef.describe("The service account's password: a file (relative to the policy) or `env:VAR`, never inline."),
    user_base: z.string().min(1).describe("Search base of user entries."),
    user_filter: z
      .string()
      .refine((s) => s.includes("{uid}"), { message: "must contain the {uid} placeholder" })
      .default("(&(objectClass=inetOrgPerson)(uid={uid}))")
      .describe(
        "LDAP filter (RFC 4515) that finds the user's entry under `user_base`; `{uid}` is the typed uid, escaped. Active Directory: `(&(objectCategory=person)(objectClass=user)(sAMAccountName={uid}))`.",
      ),
    /**
     * The attribute whose value in the user's own entry is the canonical uid: the identity for TOTP,
     * lockout, routes and the audit after the directory has found the entry (never the typed name,
     * which LDAP matches case-insensitively and with surrounding spaces ignored). `uid` for OpenLDAP,
     * 389/FreeIPA; `sAMAccountName` for Active Directory. An entry with it missing or multi-valued is refused.
     */
    uid_attribute: z
      .string()
      .regex(/^(?:[A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)+)$/, "must be an attribute name (e.g. uid, sAMAccountName) or an OID")
      .default("uid")
      .describe(
        "The attribute whose value in the user's own entry is the canonical uid (for TOTP, lockout, routes, the audit), never the typed name: `uid` for OpenLDAP, 389/FreeIPA; `sAMAccountName` for Active Directory. An entry with it missing or multi-valued is refused.",
      ),
    /**
     * An extra LDAP filter (RFC 4515) the user's entry must match to log in by any method (password or
     * key); a user who fails it is refused as `account_inactive`. Unset by default, because varco always
     * reads these status attributes itself and refuses the account in code (a directory without one of
     * these schemas has no such attribute, so the checks cannot lock everyone out):
     * OpenLDAP ppolicy `pwdAccountLockedTime` present; `shadowExpire` on or before today;
     * 389/FreeIPA `nsAccountLock: TRUE`; AD `userAccountControl` bit 2 (ACCOUNTDISABLE),
     * `msDS-User-Account-Control-Computed` bit 16 (lockout), `accountExpires` in the past.
     * Use this key for site rules. Placeholders (escaped): `{uid}` (canonical), `{dn}`, `{now_days}`,
     * `{now_filetime}`, `{now_gentime}`. Examples: AD `(!(userAccountControl:1.2.840.113556.1.4.803:=2))`;
     * any directory `(objectClass=posixAccount)` (only accounts with a POSIX identity).
     * CAUTION: an attribute the server's schema does not know makes a filter Undefined for every entry
     * (RFC 4511 §4.5.1.7; its negation too), which refuses every user; `varco doctor` tests the filter.
     */
    account_filter: z
      .string()
      .refine((s) => /^\(.*\)$/s.test(s.trim()) && balancedParentheses(s), {
        message: "must be an LDAP filter in parentheses, e.g. (!(nsAccountLock=TRUE))",
      })
      .refine(
        (s) => [...s.matchAll(/\{(\w+)\}/g)].every((m) => ["uid", "dn", "now_days", "now_filetime", "now_gentime"].includes(m[1] ?? "")),
        {
          message: "placeholders are {uid}, {dn}, {now_days}, {now_filetime}, {now_gentime}",
        },
      )
      .optional()
      .describe(
        "An extra LDAP filter (RFC 4515) the user's entry must match to log in by any method; a user who fails it is refused as `account_inactive`. Unset by default because the built-in status checks (ppolicy, shadowExpire, nsAccountLock, AD userAccountControl/accountExpires) always apply. Placeholders (escaped): `{uid}`, `{dn}`, `{now_days}`, `{now_filetime}`, `{now_gentime}`. An attribute the server does not know refuses every user (RFC 4511 §4.5.1.7): `varco doctor` tests the filter.",
      ),
    group_base: z
      .string()
      .min(1)
      .optional()
      .describe("Search base of group entries, searched with `group_filter` (unless `group_attribute` is set); absent = no group search."),
    group_filter: z
      .string()
      .default("(&(objectClass=posixGroup)(memberUid={uid}))")
      .describe(
        "LDAP filter (RFC 4515) that finds the user's groups under `group_base`; `{uid}` and `{dn}` are escaped. Active Directory nested groups: `(member:1.2.840.113556.1.4.1941:={dn})`.",
      ),
    /** Read groups from this attribute of the user entry (Active Directory / slapd memberof: `memberOf`); each value's first RDN is the group name. */
    group_attribute: z
      .string()
      .min(1)
      .optional()
      .describe(
        "Read groups from this attribute of the user entry instead of searching (Active Directory, slapd memberof: `memberOf`); each value's first RDN is the group name.",
      ),
    /** Attribute holding the user's SSH public keys (openssh-lpk: `sshPublicKey`). */
    ssh_key_attribute: z
      .string()
      .min(1)
      .default("sshPublicKey")
      .describe("Attribute of the user entry holding SSH public keys (openssh-lpk `sshPublicKey`), for the publickey factor."),
    tls: z
      .strictObject({
        ca_file: z
          .string()
          .optional()
          .describe("PEM CA that signed the server certificate (relative to the policy; default: the system CAs)."),
        starttls: z.boolean().default(false).describe("Upgrade an `ldap://` connection with StartTLS (RFC 4511 §4.14) before binding."),
      })
      .prefault({})
      .describe("TLS of the directory connection; an untrusted certificate or a wrong host name refuses the login."),
    timeout: durationDefault("5s").describe("Time limit of connecting to the server and of each LDAP operation."),
  })
  .describe(
    "An LDAP or Active Directory server: a service account finds the user's entry, then the password is checked by a bind as that entry.",
  );

const localUser = z.strictObject({
  uid: z.string().min(1).describe("The account's canonical uid (a typed name matches it case-insensitively)."),
  password_hash: z.string().min(1).describe("argon2id hash from `varco user hash`; never the password itself."),
  totp_secret_file: z
    .string()
    .optional()
    .describe("File (relative to the policy) with the user's TOTP secret, copied into the TOTP store at start when the store has none."),
  groups: z.array(z.string()).default([]).describe("Groups of the user, matched by routes' `groups`."),
});

const directory = z
  .strictObject({
    ldap: ldap.optional(),
    local_users: z
      .array(localUser)
      .default([])
      .describe("Break-glass accounts that work without the directory; they still need TOTP and every use is audited."),
  })
  .describe("Where users come from: an LDAP / Active Directory server, break-glass local users, or both (at least one).");

export const AUTH_METHODS = ["password", "totp", "publickey"] as const;
export type AuthMethod = (typeof AUTH_METHODS)[number];

/** A regular expression (JavaScript syntax), compiled once to check it. */
const regexSource = z.string().refine(
  (s) => {
    try {
      new RegExp(s, "u");
      return s.startsWith("^") && s.endsWith("$");
    } catch {
      return false;
    }
  },
  { message: "must be a regular expression anchored with ^ and $" },
);

const auth = z
  .strictObject({
    /**
     * What the uid part of an SSH user name may look like; checked before any directory call
     * (after Unicode NFC). The default allows letters, digits, '.', '_', '-' and '@', 1–64 characters.
     */
    uid_pattern: regexSource
      .default(DEFAULT_UID_PATTERN)
      .describe(
        "Regular expression (JavaScript, anchored with ^ and $) the uid part of an SSH user name must match, checked after Unicode NFC and before any directory call. The default allows letters, digits, '.', '_', '-' and '@', 1–64 characters: no spaces, control characters, filter or path metacharacters.",
      ),
    chains: z
      .array(z.array(z.enum(AUTH_METHODS)).min(1))
      .min(1)
      .default([["password", "totp"]])
      .describe(
        "Factor chains; a login completes every factor of any one chain. `[[publickey, totp]]` uses partial success (RFC 4252 §5.1): the key first, then only the code.",
      ),
    totp: z
      .strictObject({
        issuer: z.string().default("varco").describe("Issuer in the `otpauth://` URI and QR code shown at enrolment."),
        digits: z
          .union([z.literal(6), z.literal(7), z.literal(8)])
          .default(6)
          .describe("Digits per code (RFC 6238). Stored secrets depend on it: changing it needs a restart."),
        period: durationDefault("30s").describe("Time step of the codes (RFC 6238). Changing it needs a restart."),
        window: z
          .number()
          .int()
          .min(0)
          .max(10)
          .default(1)
          .describe(
            "Steps accepted either side of now, for clock drift; a used step is never accepted twice (on every node sharing a PostgreSQL `state`; with the default SQLite state only per node, so keep it at 1 with two nodes).",
          ),
        secrets: z
          .enum(["local", "ldap"])
          .default("local")
          .describe(
            "Where TOTP secrets live: `local` in the login state (`state`: `<state_dir>/state.db`, or PostgreSQL shared by every node), AES-256-GCM encrypted under `<state_dir>/totp.key` (`varco user totp enroll`); `ldap` in the directory attribute `ldap_attribute`, shared by every node (varco enrols no one).",
          ),
        ldap_attribute: z.string().optional().describe("Directory attribute holding the user's TOTP secret; required by `secrets: ldap`."),
        enrol_on_first_login: z
          .boolean()
          .default(false)
          .describe(
            "`true`: a user with an invitation (`varco user totp invite`) enrols inside the SSH login. A password alone is never enough to enrol, else whoever learns it first would bind their own authenticator.",
          ),
        remember: durationDefault("0s")
          .refine((ms) => ms <= 24 * 3600_000, {
            message:
              "at most 24h: a remembered code stands in for the second factor, and NIST SP 800-63B asks for it at least once a day (use e.g. 8h, or 0s for off)",
          })
          .describe(
            "After a full login through a chain with `publickey` and `totp`, the same uid with the same public key from the same source network (IPv4 /24, IPv6 /64) is not asked for the code again for this long (audited as `mfa_remembered` on every use). `0s` (the default): off. At most `24h`. Never for chains without `publickey`; revoked by `varco user forget`, a lockout of the uid and a TOTP reset or re-enrolment; with `secrets: ldap`, by another secret (or none) in the directory.",
          ),
      })
      .prefault({})
      .describe("The TOTP factor (RFC 6238)."),
    publickey: z
      .strictObject({
        /** Read keys from the directory's ssh_key_attribute. */
        from_directory: z.boolean().default(true).describe("Read keys from the directory's `ssh_key_attribute`."),
        /** A file of authorized keys per user; `{uid}` is replaced (uids with '/' or '..' are refused). */
        keys_file: z
          .string()
          .min(1)
          .optional()
          .describe(
            "A file of authorized keys per user, relative to the policy, e.g. `keys/users/{uid}.pub`; `{uid}` is replaced (uids with '/' or '..' are refused).",
          ),
      })
      .prefault({})
      .describe("Where the publickey factor's keys come from (both sources may be used)."),
    lockout: z
      .strictObject({
        max_failures: z
          .number()
          .int()
          .positive()
          .default(5)
          .describe("Failures of one canonical uid within `within` that lock the account for `lock_for`."),
        within: durationDefault("15m").describe("The sliding window failures are counted over."),
        lock_for: durationDefault("15m").describe("How long a locked account stays locked (`varco user unlock` lifts it earlier)."),
        max_failures_per_source: z
          .number()
          .int()
          .positive()
          .default(30)
          .describe("Failures from one source (an IPv4 address or an IPv6 /64) within `within` that refuse it until they age out."),
      })
      .prefault({})
      .describe(
        "Failure counting per canonical uid and per source over a sliding window; a locked account gets the same `Permission denied` without any factor being checked.",
      ),
  })
  .describe("How users authenticate: the uid syntax, the factor chains, TOTP, public keys and lockout.");

const target = z.strictObject({
  host: z.string().min(1).describe("Host name or address of the target."),
  port: port.default(22).describe("SSH port of the target."),
  user: z.string().min(1).optional().describe("Login name on the target (default: the user's canonical uid)."),
  host_key: z
    .string()
    .regex(/^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+=*(\s.*)?$/, {
      message: 'must be an OpenSSH public key line, e.g. "ssh-ed25519 AAAAC3Nza…" (see `varco keys scan`)',
    })
    .describe("The target's pinned host key, an OpenSSH public key line (`varco keys scan` prints it); any other key is refused."),
});

const allow = z
  .strictObject({
    shell: z.boolean().default(true).describe("Interactive shells."),
    exec: z.boolean().default(true).describe("Commands (`ssh host cmd`); rsync and git need it too. Commands are recorded."),
    sftp: z
      .boolean()
      .default(true)
      .describe("The sftp subsystem and sftp-server run as a command; plain `scp` of OpenSSH ≥ 9.0 speaks SFTP and needs it."),
    scp: z.boolean().default(true).describe("Legacy scp (`scp -O`: `scp -t|-f` on the target)."),
    port_forwarding: z.boolean().default(false).describe("`-L` and `-R` port forwarding (the `-R` listener opens on the target)."),
    agent_forwarding: z
      .boolean()
      .default(false)
      .describe("Agent forwarding (`ssh -A`): the target's agent requests travel back to the user's own agent."),
    jump: z
      .boolean()
      .default(false)
      .describe(
        "Jump-host mode (`ssh -J uid@gateway user@host`, a login without an alias): a TCP tunnel to this route's target only, requested by its `host` as written in `targets` or by its target name, and its `port`. The SSH session inside is end to end between the user and the target: the gateway audits the tunnel (bytes, duration) but cannot record or check what runs in it, and the other `allow` flags do not apply there.",
      ),
    x11: z
      .boolean()
      .default(false)
      .describe(
        "Accepted for compatibility only: X11 forwarding is always refused, whatever this says (the gateway does not implement it).",
      ),
  })
  .prefault({})
  .describe(
    "What the route permits; every channel request is checked against it. It cannot stop an allowed program from doing what it does (e.g. scp can write `~/.ssh/rc`): make the target enforce file-only routes too.",
  );

/**
 * What is kept of the output of a channel without a terminal (a non-pty exec such as
 * `ssh host 'tar c dir' > dir.tar`, a shell without pty); a pty session is always an asciicast.
 * `full` (the behaviour when absent: an audit that keeps the data is the safe default) keeps stdout,
 * stderr and (with `input`) stdin byte for byte in `<session>-<channel>.raw`, under `max_bytes` and
 * `on_recording_failure` like an asciicast; `digest` keeps only each stream's size and SHA-256 (an
 * `exec_output` event; nothing on disk, so `max_bytes` does not apply); `off` keeps nothing but the
 * exec event. Optional so that parsed policies stay as they were.
 */
const execOutput = z
  .enum(["full", "digest", "off"])
  .optional()
  .describe(
    "Output of a command without a terminal (`ssh host 'cat file' > file`; a pty session is always an asciicast): `full` (the behaviour when absent) keeps stdout/stderr byte for byte in a `.raw` file under `max_bytes` and `on_recording_failure`, `digest` only each stream's size and SHA-256, `off` nothing but the exec event.",
  );

const recordObject = z.strictObject({
  enabled: z.boolean().default(true).describe("Record the route's sessions."),
  /** Also record what the user types ("i" events); off by default (passwords typed at prompts). */
  input: z
    .boolean()
    .default(false)
    .describe(
      "Also record what the user types, passwords typed at prompts on the target included (lines after a password-like prompt are masked as a courtesy, not a guarantee); off by default for that reason.",
    ),
  /** What to do when the recording cannot be written (disk full): fail closed or carry on. */
  on_recording_failure: z
    .enum(["terminate", "continue"])
    .default("terminate")
    .describe(
      "When the recording cannot be written (disk full, `max_bytes` reached): `terminate` the session (fail closed) or `continue` unrecorded (audited as `recording_failed`).",
    ),
  /**
   * Cap per recording, bytes of recorded output plus (with `input`) recorded input (exec sessions
   * without a pty can be large). Reaching it is a recording failure: `on_recording_failure` applies.
   */
  max_bytes: sizeDefault("64MiB").describe(
    "Cap per recording: recorded output plus (with `input`) recorded input. Reaching it is a recording failure: `on_recording_failure` applies.",
  ),
  /**
   * An `sftp` subsystem (or sftp-server exec) whose bytes are not SFTP (the first packets are not
   * INIT/VERSION, an absurd packet length) or that overflows the parser's bounds cannot be audited:
   * `terminate` (the default when absent: such a channel would be an unrecorded tunnel) or `continue`
   * (a `transfer_unparsed` event either way). Optional so that parsed policies stay as they were.
   */
  on_unparsed: z
    .enum(["terminate", "continue"])
    .optional()
    .describe(
      "An sftp channel whose bytes are not SFTP, or that overflows the parser's bounds, cannot be audited: `terminate` it (the behaviour when absent: it would be an unrecorded tunnel) or `continue` (a `transfer_unparsed` event either way).",
    ),
  exec_output: execOutput,
});

/** The default of `record` (zod cannot show it in the input JSON Schema: `x-default` carries it). */
const RECORD_DEFAULT = true;

/** `record: true|false` or the full object; always normalised to the object. */
const recordSetting = z
  .union([z.boolean(), recordObject])
  .default(RECORD_DEFAULT)
  .transform((r) => (typeof r === "boolean" ? recordObject.parse({ enabled: r }) : r))
  .meta({
    description: "Terminal recording (asciicast v2, under `recordings_dir`): `true` (output only, fail closed), `false`, or the object.",
    "x-default": RECORD_DEFAULT,
  });

const route = z
  .strictObject({
    users: z.array(z.string().min(1)).default([]).describe("Canonical uids the route is for."),
    groups: z
      .array(z.string().min(1))
      .default([])
      .describe("Groups (by name, e.g. the cn) whose members the route is for; a route needs `users`, `groups` or both."),
    description: z
      .string()
      .min(1)
      .max(200)
      .regex(/^[^\p{Cc}]*$/u, { message: "a description is one line of at most 200 printable characters" })
      .optional()
      .describe("One line shown next to the alias in listings (`varco user ssh-config`, the list of aliases a login without one prints)."),
    alias: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9.-]*$/, {
        message: "an alias is letters, digits, '.' and '-' (no '_', which separates uid and alias)",
      })
      .describe(
        "The part after the last `_` of the SSH user name (`mario.rossi_vm1` → `vm1`): letters, digits, '.' and '-'. The same user or group twice under one alias is an error.",
      ),
    target: z.string().min(1).describe("The name of an entry of `targets`."),
    allow,
    record: recordSetting,
    env: z
      .array(z.string())
      .default(["LANG", "LC_*", "TERM", "TZ"])
      .describe("Environment variables the client may pass to the target; a trailing `*` matches a prefix."),
  })
  .refine((r) => r.users.length + r.groups.length > 0, {
    message: "a route needs at least one of users or groups",
  });

const version = z.literal(1).describe("The policy format version: 1.");

const targets = z
  .record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/), target)
  .describe("The SSH servers users are relayed to, by name (letters, digits, '.', '_', '-'); routes refer to them by that name.");

const routes = z
  .array(route)
  .describe(
    "Who may reach which target under which alias (`<uid>_<alias>`), and what they may do there. A login uses the first route, in file order, with its alias that names the user or one of the user's groups.",
  );

/** A port (`8080`) or an inclusive port range (`"8000-8010"`); parsed by policy/network.ts `portSpan`. */
const portSpan = z.union([
  port,
  z.string().refine(
    (s) => {
      const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(s);
      if (!m) return false;
      const lo = Number(m[1]);
      const hi = Number(m[2] ?? m[1]);
      return lo >= 1 && hi <= 65535 && lo <= hi;
    },
    { message: 'a port (8080) or a range "LOW-HIGH" within 1–65535 with LOW ≤ HIGH (e.g. "8000-8010")' },
  ),
]);

/** Layer-4 protocol of a forward or an allow-list entry; `tcp+udp` renders both. */
const l4Protocol = z.enum(["tcp", "udp", "tcp+udp"]).default("tcp");

/** A packet rate as nft(8) spells it in `limit rate`: "100/second", "30/minute". */
const connRate = z.string().regex(/^[1-9]\d{0,8}\/(second|minute|hour|day)$/, {
  message: 'a rate as nft spells it: a count per second, minute, hour or day (e.g. "100/second", "30/minute")',
});

/**
 * A port forward. IPv4 (internal_ip IPv4): DNAT from `external_ip` (default: the first address of
 * a VIP on the public interface, else public_ip) to internal_ip. IPv6 (internal_ip IPv6): routed,
 * no NAT: the port opens on internal_ip itself, so external_ip is refused and internal_port must
 * equal external_port. `sources` omitted = everyone.
 */
const portForward = z.strictObject({
  name: z.string().min(1).describe("Unique name of the forward: the log prefix (`varco fwd NAME: `) and the counters' comments use it."),
  protocol: l4Protocol.describe("`tcp`, `udp` or `tcp+udp` (both)."),
  external_ip: ipAddress
    .optional()
    .describe(
      "IPv4 address the forward is reached on: `public_ip`, a VIP address or `snat_address`. Default: the first IPv4 address of a VIP on `public_interface`, else `public_ip`. Refused for an IPv6 forward (routed, not translated).",
    ),
  external_port: portSpan.describe(
    'A port (`8080`) or an inclusive range (`"8000-8010"`). An address, protocol and port is forwarded once (overlapping ranges are refused), and never the gateway\'s own `gateway.listen` or `gateway.metrics_listen` port.',
  ),
  internal_ip: ipAddress.describe(
    "The VM the forward leads to, inside `private_networks`. IPv4: DNAT target. IPv6: the forward is routed, not translated: the port opens on this address itself.",
  ),
  /** Omitted: the external port (or range). A range must have the external range's length. */
  internal_port: portSpan
    .optional()
    .describe(
      'Port or range on the VM (default: the same as `external_port`). A range maps onto a range of the same length (`"8000-8010"` → `"9000-9010"`); a shifted range is rendered port by port and spans at most 4096 ports. IPv6 forwards keep their ports.',
    ),
  sources: z
    .array(cidr)
    .optional()
    .describe(
      "Source addresses or CIDRs allowed to use the forward, of the forward's family (absent = everyone); from inside, only these VMs reach it by hairpin.",
    ),
  /** Log new connections (nft `log`, rate-limited) with a prefix naming the forward. */
  log: z
    .boolean()
    .optional()
    .describe("Log each new connection (nft `log`) with the prefix `varco fwd NAME: `, at most 10 lines a second."),
  /** New connections over this rate (all sources together) are dropped and counted. */
  rate: connRate
    .optional()
    .describe(
      'New connections over this rate, all sources together, are dropped and counted (`rate of NAME` in `nft list table inet varco`); nft(8) `limit rate` syntax, e.g. `"100/second"`.',
    ),
});

const forwardAllow = z.strictObject({
  name: z.string().min(1).describe("Unique name of the entry."),
  protocol: l4Protocol.describe("`tcp`, `udp` or `tcp+udp` (both)."),
  from: z
    .array(cidr)
    .min(1)
    .describe("Source addresses or CIDRs. One entry is one address family: IPv4 and IPv6 in `from`/`to` are refused (split the entry)."),
  to: z.array(cidr).min(1).describe("Destination addresses or CIDRs, of the same family as `from`."),
  ports: z
    .array(portSpan)
    .min(1)
    .describe('Destination ports or ranges (`"8000-8010"`); every `from` × `to` × protocol × port is allowed.'),
});

/** A Linux interface name (IFNAMSIZ: at most 15 characters): rendered into nft, keepalived.conf and ifupdown2 stanzas, so nothing else. */
const ifName = z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, {
  message: "an interface name: 1–15 letters, digits, '_', '.' and '-' (the link's name, not an altname)",
});
/** A path or command written into keepalived.conf: one line, no quotes (keepalived.conf(5) has no escapes). */
const confLine = z
  .string()
  .min(1)
  .refine((v) => !/["\p{Cc}]/u.test(v), { message: "one line without control characters or double quotes" });

const vlanId = z.number().int().min(1).max(4094);
/** A VLAN id or an inclusive range `"2-4094"` (bridge(8) `vid VID[-VID]`, ifupdown2 `bridge-vids`). */
const vlanIds = z.union([
  vlanId,
  z
    .string()
    .regex(/^\d{1,4}-\d{1,4}$/, { message: 'a VLAN id (1–4094) or a range "first-last", e.g. "2-4094"' })
    .refine(
      (r) => {
        const [a, b] = r.split("-").map(Number) as [number, number];
        return a >= 1 && b <= 4094 && a <= b;
      },
      { message: 'a VLAN range "first-last" with 1 ≤ first ≤ last ≤ 4094' },
    ),
]);

const bridge = z.strictObject({
  name: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,15}$/, { message: "an interface name of at most 15 characters" })
    .describe("Interface name of the bridge (at most 15 characters, e.g. `vmbr1`); not `public_interface`."),
  ports: z
    .array(ifName)
    .default([])
    .describe(
      "Interfaces enslaved to the bridge (a NIC, a veth; with `vlan`, the NIC the `<port>.<vlan>` sub-interface is made on). A port belongs to one bridge; `net plan` refuses the public interface, a port of another bridge or bond, a bridge, or a link that carries an address.",
    ),
  /** Tag: the ports are `<port>.<vlan>` sub-interfaces (802.1Q), created by varco. */
  vlan: vlanId
    .optional()
    .describe("802.1Q tag: the bridge's ports are the sub-interfaces `<port>.<vlan>`, which varco creates. Excludes `vlan_aware`."),
  address: cidr
    .optional()
    .describe(
      "The front-end's address on the bridge, in CIDR notation (e.g. `10.10.10.1/24`); its subnet must lie inside `private_networks`.",
    ),
  /** VLAN-aware bridge (default false; ip-link(8) `vlan_filtering 1`, ifupdown2 `bridge-vlan-aware yes`): VMs tag their own traffic. */
  vlan_aware: z
    .boolean()
    .optional()
    .describe(
      "A VLAN-aware bridge whose VMs tag their own traffic (ip-link(8) `vlan_filtering 1`, ifupdown2 `bridge-vlan-aware yes`); absent = false.",
    ),
  /** VLANs the ports of a VLAN-aware bridge carry; default `["2-4094"]` (as Proxmox VE). Only with vlan_aware. */
  vids: z
    .array(vlanIds)
    .min(1)
    .optional()
    .describe(
      'VLAN ids or ranges the ports of a `vlan_aware` bridge carry (bridge(8) `vid`); only with `vlan_aware`. Absent: `["2-4094"]`, as Proxmox VE.',
    ),
});

/** The Proxmox host's side of east-west: the `bridge`-family table applied with `varco net apply --role host`. */
const hostBridge = z
  .strictObject({
    /**
     * The front-end's own addresses on the shared bridge (bastion sessions, hairpin NAT leave from them):
     * traffic to or from them is filtered by the front-end's forward chain, not as east-west here.
     * Default: the addresses of network.bridges.
     */
    gateway_addresses: z
      .array(ipAddress)
      .optional()
      .describe(
        "The front-end's own addresses on the shared bridge (bastion sessions and hairpin NAT leave from them), inside `private_networks`: the host table leaves traffic to or from them to the front-end. Absent: the addresses of `network.bridges`.",
      ),
  })
  .describe(
    "The Proxmox VE host's side of east-west: `forward_allow` rendered as `table bridge <table>` (`varco net render host-bridge`, `varco net apply --role host`), for VMs that talk through a shared bridge without reaching the front-end.",
  );

/** An absolute path to a script keepalived runs on a VRRP transition (keepalived.conf(5) notify_*). */
const notifyScript = z.string().regex(/^\/[^\s"'\\]*$/, {
  message: "an absolute path to an executable with no spaces or quotes (keepalived runs it as root; pass arguments in a wrapper script)",
});

const vip = z.strictObject({
  instance: z
    .string()
    .regex(/^[A-Za-z0-9_.-]+$/, { message: "a VRRP instance name is letters, digits, '_', '.' and '-'" })
    .describe("Name of the VRRP instance (keepalived `vrrp_instance`), unique in the policy."),
  interface: ifName.describe("The link the VIP addresses are added to and VRRP adverts are sent on (usually `public_interface`)."),
  virtual_router_id: z
    .number()
    .int()
    .min(1, { message: "virtual_router_id must be 1–255 (keepalived.conf(5))" })
    .max(255, {
      message: "virtual_router_id must be 1–255 (keepalived.conf(5))",
    })
    .describe("VRRP router id (RFC 5798), the same on every node of the pair; unique per interface."),
  priority: z
    .number()
    .int()
    .min(1)
    .max(254)
    .default(100)
    .describe("VRRP priority: the highest wins the election. Give each node its own (e.g. 150 and 100)."),
  /** Initial state; keepalived's `nopreempt` needs BACKUP, so MASTER is only accepted with `nopreempt: false`. */
  state: z
    .enum(["MASTER", "BACKUP"])
    .optional()
    .describe(
      "Initial state (absent: `BACKUP`, and the highest priority wins). `MASTER` only with `nopreempt: false`: keepalived's `nopreempt` needs BACKUP.",
    ),
  /**
   * true (default): keepalived `nopreempt`, a node that comes back (e.g. after a reboot) with a higher
   * priority does not take the VIP back from a working master.
   */
  nopreempt: z
    .boolean()
    .default(true)
    .describe(
      "keepalived `nopreempt` (default true): a node that comes back after a reboot or a crash does not take the VIP back from a working master, even with a higher priority, so an address never moves twice for one failure.",
    ),
  /** VRRPv2: whole seconds 1s–255s; with network.keepalived.vrrp_version 3: steps of 10ms, 10ms–40.95s. */
  advert_interval: durationDefault("1s").describe(
    "Time between VRRP adverts (keepalived `advert_int`). VRRPv2: whole seconds, 1s–255s; with `network.keepalived.vrrp_version: 3`: steps of 10ms, 10ms–40.95s. Other values are refused rather than rounded.",
  ),
  addresses: z
    .array(cidr)
    .min(1)
    .describe(
      "The addresses keepalived moves (`virtual_ipaddress`, CIDR, e.g. `203.0.113.10/24`); never `public_ip`. The first IPv4 one of a VIP on `public_interface` is the default `external_ip` of forwards and the source of outbound SNAT.",
    ),
  auth_pass_file: secretRef
    .optional()
    .describe(
      "VRRPv2 password (keepalived `auth_pass`): a file (relative to the policy) or `env:VAR`, 1–8 characters without spaces (keepalived would cut a longer one). Refused with VRRPv3, which has no authentication.",
    ),
  track_gateway_health: z
    .boolean()
    .default(false)
    .describe(
      "keepalived asks the gateway's liveness every second (`GET /livez` on `gateway.metrics_listen`, or `network.keepalived.health_command`); a failure puts the node in FAULT, so the VIP moves. The directory is not part of it.",
    ),
  /** Source address of unicast VRRP adverts (keepalived `unicast_src_ip`); default: the interface's primary address. */
  unicast_src_ip: ipAddress
    .optional()
    .describe(
      "This node's source address of unicast VRRP adverts (keepalived `unicast_src_ip`; default: the interface's primary address); only with `unicast_peers`.",
    ),
  /** Peers to send VRRP adverts to by unicast instead of multicast (keepalived `unicast_peer`), for clouds without multicast. */
  unicast_peers: z
    .array(ipAddress)
    .default([])
    .describe(
      "The other nodes, sent VRRP adverts by unicast instead of multicast (keepalived `unicast_peer`), for clouds without multicast; of the VIP's family. The input chain accepts VRRP from them only.",
    ),
  /** Scripts keepalived runs on each transition (keepalived.conf(5) notify_master/backup/fault/stop), e.g. a hoster's failover API. */
  notify: z
    .strictObject({
      master: notifyScript.optional().describe("Script run on becoming MASTER (keepalived `notify_master`)."),
      backup: notifyScript.optional().describe("Script run on becoming BACKUP (keepalived `notify_backup`)."),
      fault: notifyScript.optional().describe("Script run on entering FAULT (keepalived `notify_fault`)."),
      stop: notifyScript.optional().describe("Script run when the instance stops (keepalived `notify_stop`)."),
    })
    .optional()
    .describe(
      "Scripts keepalived runs on each transition, e.g. to call a hoster's failover API: absolute paths, no arguments; `net plan` refuses one keepalived would not run as root (missing, not executable, or it or a folder above it owned or writable by another user).",
    ),
});

/** An nft rate, as nft(8) spells it: `30/minute`, `100/second`. */
const nftRate = z.string().regex(/^[1-9]\d{0,8}\/(second|minute|hour|day)$/, {
  message: 'a rate as nft spells it: "<n>/second|minute|hour|day", e.g. "30/minute"',
});

/** What the gateway itself accepts on its public side (the input chain, src/net/input.ts). */
const inputSettings = z
  .strictObject({
    /** false = render no input chain (another firewall protects the node). */
    enabled: z
      .boolean()
      .default(true)
      .describe(
        "The input chain: every address of the node on `public_interface` is default-drop. `false` renders no input chain; only when another firewall in front of the node does this job.",
      ),
    /** New connections per source address to the gateway's listen ports; over it they are dropped. */
    ssh_rate: nftRate
      .default("30/minute")
      .describe(
        "New connections to the SSH ports of `gateway.listen`, per source address (nft(8) rate); over it they are dropped and counted. A login with a few retries never comes near the default.",
      ),
    ssh_burst: z
      .number()
      .int()
      .min(1)
      .max(10000)
      .default(10)
      .describe("New SSH connections a source may open at once before `ssh_rate` applies (nft `burst`)."),
    /** Sources allowed to reach gateway.metrics_listen from the public side (default: none). */
    metrics_sources: z
      .array(cidr)
      .default([])
      .describe(
        "Addresses or CIDRs that may reach `gateway.metrics_listen` from the public side (default: none), e.g. a Prometheus outside.",
      ),
    /** ICMP/ICMPv6 echo-request (ping) to the gateway, all sources together. */
    ping_rate: nftRate
      .default("10/second")
      .describe("Ping (ICMP and ICMPv6 echo-request) to the gateway, all sources together (nft(8) rate)."),
  })
  .describe(
    "What the gateway itself accepts on `public_interface` (the input chain). Absent: every key's default, so the chain is on. Port forwards are not affected: DNATed traffic never reaches the input hook.",
  );

/** `network.input` when the policy leaves it out (the key is optional so hand-built policies stay valid). */
export const INPUT_DEFAULTS: Readonly<z.output<typeof inputSettings>> = inputSettings.parse({});

/** An extra port opened on the gateway itself from the public side. */
const inputAllow = z
  .strictObject({
    name: z
      .string()
      .regex(/^[A-Za-z0-9_.:-]{1,64}$/, { message: "a name of letters, digits, '_', '.', ':' and '-' (at most 64)" })
      .optional()
      .describe("Name of the entry (the rule's comment `input_allow NAME`); default `PROTOCOL-PORTS`."),
    protocol: l4Protocol.describe("`tcp` (default), `udp` or `tcp+udp`."),
    port: portSpan.optional().describe('A port (`2222`) or a range (`"60000-61000"`) on the gateway itself; or use `ports`.'),
    ports: z.array(portSpan).min(1).optional().describe("Several ports or ranges on the gateway itself; or use `port`."),
    sources: z
      .array(cidr)
      .min(1, { message: 'list the sources allowed (e.g. ["198.51.100.0/24"]; ["0.0.0.0/0", "::/0"] = everyone)' })
      .describe('Addresses or CIDRs allowed (required; `["0.0.0.0/0", "::/0"]` = everyone).'),
  })
  .refine((a) => (a.port === undefined) !== (a.ports === undefined), { message: "give either port or ports (not both, not neither)" })
  .transform((a) => {
    const ports = a.ports ?? [a.port as number | string];
    return { name: a.name ?? `${a.protocol}-${ports.join("_")}`, protocol: a.protocol, ports, sources: a.sources };
  });

const network = z
  .strictObject({
    state_dir: z
      .string()
      .min(1)
      .optional()
      .describe(
        "Folder of the network generations (`varco net` history, lock, pending confirm). Default `<gateway.state_dir>/net`; set it to a root-owned folder outside the gateway's (e.g. `/var/lib/varco-net`), so the SSH-facing user cannot plant a generation that `varco net restore` would install as root.",
      ),
    table: z
      .string()
      .regex(/^[A-Za-z][A-Za-z0-9_]*$/)
      .default("varco")
      .describe(
        "Name of the only nftables table varco owns (`table inet <table>`; `table bridge <table>` on the host), replaced as a whole in one transaction.",
      ),
    public_interface: ifName.describe(
      "The interface facing the internet: default-drop on input, port forwards arrive on it, outbound SNAT leaves by it. Never a bridge port or a bridge name.",
    ),
    public_ip: ipAddress.describe(
      "This node's own static address on `public_interface` (each node of a pair has its own); never a VIP address, since keepalived removes a VIP on BACKUP or FAULT. Default `external_ip` and SNAT source when no VIP has an IPv4 address on `public_interface`.",
    ),
    private_networks: z
      .array(cidr)
      .default([])
      .describe(
        "The networks behind the gateway (IPv4 and IPv6): they may go out of `public_interface` (IPv4 SNATed), east-west between them needs `forward_allow`, forwards and bridge addresses must lie inside them. Other networks are forwarded only as `forward_allow` lists them.",
      ),
    /** On/off switch of outbound SNAT: private IPv4 leaving public_interface is SNATed (`snat to`) to snat_address. */
    masquerade: z
      .boolean()
      .default(true)
      .describe(
        "Outbound SNAT: private IPv4 traffic leaving `public_interface` gets the source `snat_address` (nft `snat to`, not `masquerade`, so the address is the one the world expects). `false` for routed public ranges.",
      ),
    /** The source of outbound SNAT (IPv4). Default: the first address of a VIP on public_interface, else public_ip. */
    snat_address: ipAddress
      .optional()
      .describe("IPv4 source of outbound SNAT. Default: the first IPv4 address of a VIP on `public_interface`, else `public_ip`."),
    /** Clamp the TCP MSS of forwarded TCP SYNs to the route MTU (`tcp option maxseg size set rt mtu`); default false. */
    mss_clamp: z
      .boolean()
      .optional()
      .describe(
        "Clamp the MSS of forwarded TCP SYNs to the route MTU (nft `tcp option maxseg size set rt mtu`), for tunnels and PPPoE; absent = false.",
      ),
    port_forwards: z
      .array(portForward)
      .default([])
      .describe(
        "Ports of the public side forwarded to VMs: IPv4 by DNAT (also reachable from inside, by hairpin NAT), IPv6 routed. Open forwards stay one hash-map lookup however many there are.",
      ),
    forward_allow: z
      .array(forwardAllow)
      .default([])
      .describe(
        "Forwarded connections allowed besides port forwards and outbound traffic: east-west between `private_networks`, or to and from networks not in them. The forward chain drops everything else (both families); the same list is rendered for the host bridge (`host_bridge`).",
      ),
    bridges: z.array(bridge).default([]).describe("The bridges the front-end needs; who creates them is `bridges_mode`."),
    /**
     * `ip` (the default when absent): varco creates the bridges with ip-link(8), transactionally with undo (not persistent:
     * the boot restore re-applies them). `render`: varco never touches links; `varco net render interfaces`
     * prints the ifupdown2 stanzas for the host's /etc/network/interfaces (Proxmox VE).
     */
    bridges_mode: z
      .enum(["ip", "render"])
      .optional()
      .describe(
        "`ip` (absent = `ip`): `varco net apply` creates the bridges with ip-link(8) in the same transaction as the rules (the boot restore re-applies them) and removes those it created that the policy drops. `render`: varco never touches a link; `varco net render interfaces` prints ifupdown2 stanzas (Proxmox VE).",
      ),
    host_bridge: hostBridge.optional(),
    vips: z.array(vip).default([]).meta({
      description:
        "Virtual IP addresses keepalived moves between the nodes of a pair (one `vrrp_instance` each, in varco's own keepalived file `network.keepalived.config_file`).",
      "x-default": [],
    }),
    input: inputSettings.optional(),
    input_allow: z
      .array(inputAllow)
      .optional()
      .describe("More ports opened on the gateway itself from the public side, each to listed sources only (absent = none)."),
    keepalived: z
      .strictObject({
        /** The only keepalived file varco writes; the operator's main_config includes it. */
        config_file: confLine
          .default("/etc/keepalived/conf.d/varco.conf")
          .describe("The only keepalived file varco writes (its VRRP instances); `main_config` must include it."),
        /** The operator's keepalived.conf: never written by varco; `net plan` refuses when it does not include config_file. */
        main_config: confLine
          .default("/etc/keepalived/keepalived.conf")
          .describe(
            "The operator's keepalived.conf, never written by varco; `net plan` refuses while it is missing or has no `include` line for `config_file`, and prints the line.",
          ),
        pid_file: confLine
          .default("/run/keepalived.pid")
          .describe(
            "keepalived's pid file: apply and rollback reload keepalived with SIGHUP to it, and `net plan` uses it to tell a VIP the running keepalived holds from a static address.",
          ),
        /** The command keepalived's track_script runs (exit 0 = alive). */
        health_command: confLine
          .optional()
          .describe(
            "The command keepalived's track script runs for `track_gateway_health` (exit 0 = alive). Absent: `bin/varco-health.mjs`, which asks `GET /livez` on `gateway.metrics_listen`.",
          ),
        /** VRRP protocol version of varco's instances (keepalived `version`): 2 (default, with auth_pass) or 3 (sub-second adverts, no auth). */
        vrrp_version: z
          .union([z.literal(2), z.literal(3)])
          .default(2)
          .describe(
            "VRRP version of varco's instances (keepalived `version`): 2 (whole-second adverts, `auth_pass_file`) or 3 (RFC 5798: sub-second adverts, no authentication).",
          ),
        /** One vrrp_sync_group for all VIPs so they move together; default: true when there are several VIPs. */
        sync_group: z
          .boolean()
          .optional()
          .describe(
            "One `vrrp_sync_group` of all VIPs, so they move together. Absent: on when there are several VIPs; `false` lets them move alone.",
          ),
      })
      .prefault({})
      .describe("varco's keepalived file, the operator's main config, and the VRRP settings shared by all VIPs."),
  })
  .describe(
    "The network front-end the same policy drives (`varco net plan|apply`): one nftables table (port forwards, the forward and input chains), bridges and keepalived VIPs. Absent: varco manages no network state (`varco net` refuses to run).",
  );

/** Where the login state lives (TOTP secrets, used steps, recovery codes, invitations, lockout failures). */
const state = z
  .strictObject({
    backend: z
      .enum(["sqlite", "postgres"])
      .default("sqlite")
      .describe(
        "`sqlite`: `<state_dir>/state.db`, this node only. `postgres`: one database shared by every gateway of a cluster, so a used TOTP code, a lockout, an enrolment or a recovery code counts on all of them.",
      ),
    url_file: z
      .string()
      .min(1)
      .optional()
      .describe(
        "File (mode 0600, or `env:VAR`) holding the libpq URL, e.g. `postgres://varco:PASSWORD@db.example:5432/varco?sslmode=verify-full` (`verify-full` checks the server certificate and host name; `sslrootcert=FILE` names the CA). Required with `backend: postgres`.",
      ),
  })
  .refine((s) => s.backend !== "postgres" || s.url_file !== undefined, {
    message: "backend postgres needs url_file (the file holding the PostgreSQL URL)",
    path: ["url_file"],
  })
  .describe(
    "The login state shared by gateways. Every node sharing a PostgreSQL state needs the same `<state_dir>/totp.key` (like the host keys). The audit trail and recordings stay per node. Changing it needs a restart; `varco state migrate` updates the schema, `varco state copy --to postgres` moves a node's SQLite state.",
  );

/** The web console (src/web): its own HTTP(S) listener, who may log in, how long a login lasts idle. */
const web = z
  .strictObject({
    listen: listenAddress.describe(
      "`host:port` of the web console's own listener, e.g. `127.0.0.1:8443`; never one of `gateway.listen` or `gateway.metrics_listen`.",
    ),
    tls: z
      .strictObject({
        cert_file: z.string().min(1).describe("PEM certificate chain (relative to the policy file)."),
        key_file: z.string().min(1).describe("PEM private key (relative to the policy file; mode 0600)."),
      })
      .optional()
      .describe(
        "Serve HTTPS with this certificate; cookies then get `Secure` and the `__Host-` prefix. Absent: plain HTTP, for a loopback listener behind a TLS reverse proxy.",
      ),
    auditor_groups: z
      .array(z.string().min(1))
      .default([])
      .describe("Directory groups (cn) whose members may log in and read sessions, search, replay recordings and download them."),
    admin_groups: z
      .array(z.string().min(1))
      .default([])
      .describe("Directory groups whose members may do what auditors do, and also end live sessions and lift lockouts."),
    idle_timeout: durationDefault("15m").describe("A web login unused this long is forgotten (the next request goes to the login page)."),
    hostnames: z
      .array(
        z.string().transform((s, ctx) => {
          const name = policyHostName(s);
          if (name === undefined) {
            ctx.addIssue({ code: "custom", message: `not a host name or IP address: ${JSON.stringify(s)}` });
            return z.NEVER;
          }
          return name;
        }),
      )
      .default([])
      .describe(
        "The names (or addresses) browsers reach the console by, e.g. `[bastion.example.org]`; compared with each request's `Host` header case-insensitively, without its port. A request for any other name gets 421 and nothing else: this stops DNS rebinding (a page of another site whose name is pointed at the console's address, driving the browser of someone on the console's network). Behind a reverse proxy: the names the proxy passes on. Empty: any name is served. Applies at reload.",
      ),
    trusted_proxies: z
      .array(proxyCidr)
      .default([])
      .describe(
        "Reverse proxies (addresses or CIDRs) whose `X-Forwarded-For` is believed: for a request from one of them, the client is the rightmost address of that header that is not itself a trusted proxy. It is what the audit records as the source and what lockout per source counts. Empty: the TCP peer is the client. Applies at reload.",
      ),
  })
  .refine((w) => w.auditor_groups.length + w.admin_groups.length > 0, {
    message: "web needs auditor_groups or admin_groups (nobody could log in)",
    path: ["auditor_groups"],
  })
  .describe(
    "The web console: auditors browse, search and replay sessions; admins also see and end live sessions and lift lockouts. Login with the same directory, second factor, lockout and audit as SSH (password and code). Absent: off. Changing `listen` or `tls` needs a restart.",
  );

export const policySchema = z.strictObject({
  version,
  gateway,
  directory,
  auth: auth.prefault({}),
  targets,
  routes,
  network: network.optional(),
  state: state.prefault({}),
  web: web.optional(),
});

/** A validated policy, with defaults filled, durations in ms and sizes in bytes. Paths are still as written. */
export type Policy = z.output<typeof policySchema>;
export type PolicyTarget = Policy["targets"][string];
export type PolicyRoute = Policy["routes"][number];
export type RouteAllow = PolicyRoute["allow"];
export type RecordSettings = PolicyRoute["record"];
export type NetworkPolicy = NonNullable<Policy["network"]>;

/** The JSON Schema of the policy file, for editors' YAML language servers. */
export function policyJsonSchema(): unknown {
  return z.toJSONSchema(policySchema, { io: "input", unrepresentable: "any" });
}

/** Dotted paths of policy keys that name secrets: pino's `redact` uses the same list. */
export const SECRET_PATHS = [
  "password",
  "bindPassword",
  "totp_code",
  "secret",
  "privateKey",
  "*.password",
  "*.bindPassword",
  "*.totp_code",
  "*.secret",
  "*.privateKey",
] as const;
