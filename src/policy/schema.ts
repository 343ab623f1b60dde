/**
 * The policy file's schema (contract section 2), as zod definitions.
 * Durations are converted to milliseconds and sizes to bytes during validation.
 * Unknown keys are errors everywhere (`z.strictObject`).
 */
import { isIP } from "node:net";
import { z } from "zod";
import { DEFAULT_UID_PATTERN } from "../auth/account.ts";
import { parseDurationMs, parseHostPort, parseSizeBytes } from "./units.ts";

/** A duration string (`30s`, `15m`, `12h`) → milliseconds. */
export const duration = z.string().transform((text, ctx) => {
  const ms = parseDurationMs(text);
  if (ms === undefined) {
    ctx.addIssue({ code: "custom", message: `"${text}" is not a duration; use e.g. 30s, 15m, 12h, 7d` });
    return z.NEVER;
  }
  return ms;
});

/** A size string (`64MiB`) → bytes. */
export const size = z.string().transform((text, ctx) => {
  const bytes = parseSizeBytes(text);
  if (bytes === undefined) {
    ctx.addIssue({ code: "custom", message: `"${text}" is not a size; use e.g. 512KiB, 64MiB, 1GiB` });
    return z.NEVER;
  }
  return bytes;
});

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

const limits = z.strictObject({
  max_sessions: z.number().int().positive().default(1000),
  max_unauthenticated: z.number().int().positive().default(50),
  max_unauthenticated_per_source: z.number().int().positive().default(10),
  max_auth_attempts: z.number().int().positive().default(6),
  /** Channels (sessions and forwarded streams) open at once on one connection. */
  max_channels: z.number().int().positive().max(10_000).default(64),
  login_grace: duration.default(30_000),
  idle_timeout: duration.default(3_600_000),
});

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
    url: syslogUrl,
    /** PEM CA bundle that signs the receiver's certificate (tls:// only; default: the system CAs). */
    ca_file: z.string().min(1).optional(),
    /** RFC 5424 APP-NAME (printable US-ASCII, at most 48 characters). */
    app_name: z
      .string()
      .regex(/^[\x21-\x7e]{1,48}$/, "must be 1-48 printable ASCII characters without spaces")
      .default("varco"),
  })
  .refine((o) => o.ca_file === undefined || o.url.startsWith("tls://"), { message: "ca_file needs a tls:// url", path: ["ca_file"] });

const gateway = z.strictObject({
  listen: z.array(listenAddress).min(1).default(["0.0.0.0:22"]),
  host_keys: z.array(z.string().min(1)).min(1).default(["keys/ssh_host_ed25519_key"]),
  egress_key: z.string().min(1).default("keys/egress_ed25519"),
  banner: z.string().optional(),
  state_dir: z.string().min(1).default("/var/lib/varco"),
  /** Where terminal recordings go (default: <state_dir>/recordings); a separate volume keeps a full disk away from the DB. */
  recordings_dir: z.string().min(1).optional(),
  /** ed25519 private key (PEM) that signs audit chain checkpoints; keep it off the audit volume. `varco audit keygen` makes one. */
  audit_signing_key: z.string().min(1).optional(),
  /** How often the chain head is signed when there are new events. */
  audit_checkpoint_interval: duration.default(60_000),
  /**
   * Forward-secure sealing state file (`varco audit keygen --out FILE`; relative to the policy, mode 0600).
   * Every audit_checkpoint_interval the gateway seals the chain head with it, logs an "audit anchor" line
   * and ratchets the key; the auditor verifies with the key keygen printed once.
   */
  audit_seal_state: z.string().min(1).optional(),
  /** This gateway's name in audit seals and anchor lines (default: the host name). */
  node: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,253}$/, "must be a host name (letters, digits, '.', '_', '-')")
    .optional(),
  /** Streams every committed audit event and every anchor to a remote syslog (absent = off). */
  audit_syslog: auditSyslog.optional(),
  limits: limits.prefault({}),
  metrics_listen: listenAddress.optional(),
  upstream_timeout: duration.default(10_000),
  /** What a reload does to a live session whose route it removed: keep it (audited) or close it. */
  on_route_removed: z.enum(["keep", "terminate"]).default("keep"),
  /** On SIGTERM, how long live sessions may go on before they are closed. */
  stop_timeout: duration.default(30_000),
});

/** Whether the parentheses of an LDAP filter balance (escaped ones are `\28`/`\29`, RFC 4515 §3). */
function balancedParentheses(s: string): boolean {
  let depth = 0;
  for (const ch of s) {
    if (ch === "(") depth++;
    else if (ch === ")" && --depth < 0) return false;
  }
  return depth === 0;
}

const ldap = z.strictObject({
  url: z.string().regex(/^ldaps?:\/\/.+/, "must start with ldap:// or ldaps://"),
  bind_dn: z.string().min(1),
  bind_password_file: secretRef,
  user_base: z.string().min(1),
  user_filter: z
    .string()
    .refine((s) => s.includes("{uid}"), { message: "must contain the {uid} placeholder" })
    .default("(&(objectClass=inetOrgPerson)(uid={uid}))"),
  /**
   * The attribute whose value in the user's own entry is the canonical uid: the identity for TOTP,
   * lockout, routes and the audit after the directory has found the entry (never the typed name,
   * which LDAP matches case-insensitively and with surrounding spaces ignored). `uid` for OpenLDAP,
   * 389/FreeIPA; `sAMAccountName` for Active Directory. An entry with it missing or multi-valued is refused.
   */
  uid_attribute: z
    .string()
    .regex(/^(?:[A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)+)$/, "must be an attribute name (e.g. uid, sAMAccountName) or an OID")
    .default("uid"),
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
    .optional(),
  group_base: z.string().min(1).optional(),
  group_filter: z.string().default("(&(objectClass=posixGroup)(memberUid={uid}))"),
  /** Read groups from this attribute of the user entry (Active Directory / slapd memberof: `memberOf`); each value's first RDN is the group name. */
  group_attribute: z.string().min(1).optional(),
  /** Attribute holding the user's SSH public keys (openssh-lpk: `sshPublicKey`). */
  ssh_key_attribute: z.string().min(1).default("sshPublicKey"),
  tls: z.strictObject({ ca_file: z.string().optional(), starttls: z.boolean().default(false) }).prefault({}),
  timeout: duration.default(5000),
});

const localUser = z.strictObject({
  uid: z.string().min(1),
  password_hash: z.string().min(1),
  totp_secret_file: z.string().optional(),
  groups: z.array(z.string()).default([]),
});

const directory = z.strictObject({
  ldap: ldap.optional(),
  local_users: z.array(localUser).default([]),
});

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

const auth = z.strictObject({
  /**
   * What the uid part of an SSH user name may look like; checked before any directory call
   * (after Unicode NFC). The default allows letters, digits, '.', '_', '-' and '@', 1–64 characters.
   */
  uid_pattern: regexSource.default(DEFAULT_UID_PATTERN),
  chains: z
    .array(z.array(z.enum(AUTH_METHODS)).min(1))
    .min(1)
    .default([["password", "totp"]]),
  totp: z
    .strictObject({
      issuer: z.string().default("varco"),
      digits: z.union([z.literal(6), z.literal(7), z.literal(8)]).default(6),
      period: duration.default(30_000),
      window: z.number().int().min(0).max(10).default(1),
      secrets: z.enum(["local", "ldap"]).default("local"),
      ldap_attribute: z.string().optional(),
      enrol_on_first_login: z.boolean().default(false),
    })
    .prefault({}),
  publickey: z
    .strictObject({
      /** Read keys from the directory's ssh_key_attribute. */
      from_directory: z.boolean().default(true),
      /** A file of authorized keys per user; `{uid}` is replaced (uids with '/' or '..' are refused). */
      keys_file: z.string().min(1).optional(),
    })
    .prefault({}),
  lockout: z
    .strictObject({
      max_failures: z.number().int().positive().default(5),
      within: duration.default(900_000),
      lock_for: duration.default(900_000),
      max_failures_per_source: z.number().int().positive().default(30),
    })
    .prefault({}),
});

const target = z.strictObject({
  host: z.string().min(1),
  port: port.default(22),
  user: z.string().min(1).optional(),
  host_key: z.string().regex(/^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+=*(\s.*)?$/, {
    message: 'must be an OpenSSH public key line, e.g. "ssh-ed25519 AAAAC3Nza…" (see `varco keys scan`)',
  }),
});

const allow = z
  .strictObject({
    shell: z.boolean().default(true),
    exec: z.boolean().default(true),
    sftp: z.boolean().default(true),
    scp: z.boolean().default(true),
    port_forwarding: z.boolean().default(false),
    agent_forwarding: z.boolean().default(false),
    x11: z.boolean().default(false),
  })
  .prefault({});

const recordObject = z.strictObject({
  enabled: z.boolean().default(true),
  /** Also record what the user types ("i" events); off by default (passwords typed at prompts). */
  input: z.boolean().default(false),
  /** What to do when the recording cannot be written (disk full): fail closed or carry on. */
  on_recording_failure: z.enum(["terminate", "continue"]).default("terminate"),
  /**
   * Cap per recording, bytes of recorded output plus (with `input`) recorded input (exec sessions
   * without a pty can be large). Reaching it is a recording failure: `on_recording_failure` applies.
   */
  max_bytes: size.default(64 * 1024 * 1024),
  /**
   * An `sftp` subsystem (or sftp-server exec) whose bytes are not SFTP (the first packets are not
   * INIT/VERSION, an absurd packet length) or that overflows the parser's bounds cannot be audited:
   * `terminate` (the default when absent: such a channel would be an unrecorded tunnel) or `continue`
   * (a `transfer_unparsed` event either way). Optional so that parsed policies stay as they were.
   */
  on_unparsed: z.enum(["terminate", "continue"]).optional(),
});

/** `record: true|false` or the full object; always normalised to the object. */
const recordSetting = z
  .union([z.boolean(), recordObject])
  .default(true)
  .transform((r) => (typeof r === "boolean" ? recordObject.parse({ enabled: r }) : r));

const route = z
  .strictObject({
    users: z.array(z.string().min(1)).default([]),
    groups: z.array(z.string().min(1)).default([]),
    alias: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.-]*$/, {
      message: "an alias is letters, digits, '.' and '-' (no '_', which separates uid and alias)",
    }),
    target: z.string().min(1),
    allow,
    record: recordSetting,
    env: z.array(z.string()).default(["LANG", "LC_*", "TERM", "TZ"]),
  })
  .refine((r) => r.users.length + r.groups.length > 0, {
    message: "a route needs at least one of users or groups",
  });

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
  name: z.string().min(1),
  protocol: l4Protocol,
  external_ip: ipAddress.optional(),
  external_port: portSpan,
  internal_ip: ipAddress,
  /** Omitted: the external port (or range). A range must have the external range's length. */
  internal_port: portSpan.optional(),
  sources: z.array(cidr).optional(),
  /** Log new connections (nft `log`, rate-limited) with a prefix naming the forward. */
  log: z.boolean().optional(),
  /** New connections over this rate (all sources together) are dropped and counted. */
  rate: connRate.optional(),
});

const forwardAllow = z.strictObject({
  name: z.string().min(1),
  protocol: l4Protocol,
  from: z.array(cidr).min(1),
  to: z.array(cidr).min(1),
  ports: z.array(portSpan).min(1),
});

const bridge = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, { message: "an interface name of at most 15 characters" }),
  ports: z.array(z.string().min(1)).default([]),
  vlan: z.number().int().min(1).max(4094).optional(),
  address: cidr.optional(),
});

const vip = z.strictObject({
  instance: z.string().regex(/^[A-Za-z0-9_.-]+$/, { message: "a VRRP instance name is letters, digits, '_', '.' and '-'" }),
  interface: z.string().min(1),
  virtual_router_id: z.number().int().min(1, { message: "virtual_router_id must be 1–255 (keepalived.conf(5))" }).max(255, {
    message: "virtual_router_id must be 1–255 (keepalived.conf(5))",
  }),
  priority: z.number().int().min(1).max(254).default(100),
  state: z.enum(["MASTER", "BACKUP"]).optional(),
  advert_interval: duration.default(1000),
  addresses: z.array(cidr).min(1),
  auth_pass_file: secretRef.optional(),
  track_gateway_health: z.boolean().default(false),
});

const network = z.strictObject({
  table: z
    .string()
    .regex(/^[A-Za-z][A-Za-z0-9_]*$/)
    .default("varco"),
  public_interface: z.string().min(1),
  public_ip: ipAddress,
  private_networks: z.array(cidr).default([]),
  /** On/off switch of outbound SNAT: private IPv4 leaving public_interface is SNATed (`snat to`) to snat_address. */
  masquerade: z.boolean().default(true),
  /** The source of outbound SNAT (IPv4). Default: the first address of a VIP on public_interface, else public_ip. */
  snat_address: ipAddress.optional(),
  /** Clamp the TCP MSS of forwarded SYNs to the route MTU (`tcp option maxseg size set rt mtu`); default false. */
  mss_clamp: z.boolean().optional(),
  port_forwards: z.array(portForward).default([]),
  forward_allow: z.array(forwardAllow).default([]),
  bridges: z.array(bridge).default([]),
  vips: z.array(vip).default([]),
  keepalived: z
    .strictObject({
      config_file: z.string().min(1).default("/etc/keepalived/keepalived.conf"),
      pid_file: z.string().min(1).default("/run/keepalived.pid"),
      /** The command keepalived's track_script runs (exit 0 = healthy). */
      health_command: z.string().min(1).optional(),
    })
    .prefault({}),
});

export const policySchema = z.strictObject({
  version: z.literal(1),
  gateway,
  directory,
  auth: auth.prefault({}),
  targets: z.record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/), target),
  routes: z.array(route),
  network: network.optional(),
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
