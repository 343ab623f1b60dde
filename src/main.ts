/**
 * Composition root: the only place that wires implementations together (policy → directory,
 * TOTP store, audit store, keys → SSH gateway). The CLI calls into here.
 */
import { createHash, createPrivateKey } from "node:crypto";
import { readFileSync, watch } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type AuditStore, anchorOf, createSealer, openAuditStore, type Sealer } from "./audit/index.ts";
import { type AuditShipper, startShipper } from "./audit/ship.ts";
import { type AuditStreamSink, createSyslogSink, type SyslogSink } from "./audit/syslog.ts";
import {
  createAuthenticator,
  createLdapDirectory,
  createLocalUsers,
  type Directory,
  type LdapDirectory,
  type Lockout,
  type LockoutSettings,
  loadOrCreateKey,
  lockoutOn,
  type TotpSettings,
  type TotpStore,
  totpKeyCheck,
  totpStoreOn,
} from "./auth/index.ts";
import {
  authPassProblem,
  currentGeneration,
  type Desired,
  desiredState,
  type GatewayServices,
  KeepalivedConfigError,
  netStateDir,
  type ServiceAddress,
} from "./net/index.ts";
import { createMetrics, type HealthCheck, type Logger, serveHealth } from "./obs/index.ts";
import {
  checkPrivateFiles,
  type LoadedPolicy,
  loadPolicyFile,
  type NetworkPolicy,
  type Policy,
  PolicyError,
  parseHostPort,
  readSecret,
} from "./policy/index.ts";
import { createGateway, type Gateway, type GatewayRuntime, loadKey } from "./ssh/index.ts";
import { type AuthState, openAuditReplica, openState, postgresUrl, StateError } from "./state/index.ts";
import { startWebForGateway } from "./web/index.ts";

/** Thrown when the policy names something the gateway cannot do yet or cannot use. */
export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StartupError";
  }
}

export function totpSettings(policy: Policy): TotpSettings {
  const t = policy.auth.totp;
  return { issuer: t.issuer, digits: t.digits, periodMs: t.period, window: t.window };
}

/** Where the state lives, resolved against the policy file. */
export function statePaths(loaded: LoadedPolicy): { stateDir: string; auditDb: string; recordingsDir: string } {
  const stateDir = loaded.resolvePath(loaded.policy.gateway.state_dir);
  const rec = loaded.policy.gateway.recordings_dir;
  return { stateDir, auditDb: join(stateDir, "audit.db"), recordingsDir: rec ? loaded.resolvePath(rec) : join(stateDir, "recordings") };
}

/**
 * Opens (and migrates) the login state the policy names (`state.backend`: SQLite in
 * `<state_dir>/state.db`, or PostgreSQL at the URL in `state.url_file`). The one place that opens it.
 * @param o.urlFile overrides `state.url_file` and selects PostgreSQL (already resolved).
 * @param o.migrate false: refuse a newer schema, apply no migration.
 * @throws StateError (unreachable, newer schema), SecretError (URL file).
 */
export async function openStateForPolicy(
  loaded: LoadedPolicy,
  o: { logger?: Logger; urlFile?: string; migrate?: boolean; sqlite?: boolean } = {},
): Promise<AuthState> {
  const logger = o.logger;
  return openState({
    stateDir: statePaths(loaded).stateDir,
    state: o.sqlite ? { backend: "sqlite" } : loaded.policy.state,
    resolvePath: (p) => loaded.resolvePath(p),
    ...(o.urlFile === undefined ? {} : { urlFile: o.urlFile }),
    ...(o.migrate === undefined ? {} : { migrate: o.migrate }),
    ...(logger ? { onIdleError: (err: Error) => logger.warn({ err: err.message }, "login state: a PostgreSQL connection failed") } : {}),
  });
}

/** The lockout thresholds of `auth.lockout`, in ms. */
export function lockoutSettings(policy: Policy): LockoutSettings {
  const l = policy.auth.lockout;
  return { maxFailures: l.max_failures, withinMs: l.within, lockForMs: l.lock_for, maxFailuresPerSource: l.max_failures_per_source };
}

/**
 * Records the check value of this node's totp.key in the login state the first time, and refuses
 * a key that differs from the recorded one (a node sharing a PostgreSQL state without a copy of the
 * same totp.key would otherwise fail every login, or write secrets the others cannot read).
 * @throws StartupError naming the key file and what to copy.
 */
export async function checkTotpKey(state: AuthState, key: Buffer, keyFile: string): Promise<void> {
  const mine = totpKeyCheck(key);
  if ((await state.claimMeta("totp_key_check", mine)) !== mine)
    throw new StartupError(
      `${keyFile} is not the key the login state (${state.engine} ${state.where}) was written with: copy totp.key from a node that uses this state (every node sharing it needs the same file, mode 0600)`,
    );
}

/** The TOTP store on the policy's login state (its own connection, closed by `close()`), key `<state_dir>/totp.key` (checked with {@link checkTotpKey}). */
export async function openTotpForPolicy(loaded: LoadedPolicy): Promise<TotpStore> {
  const stateDir = statePaths(loaded).stateDir;
  const key = loadOrCreateKey(stateDir);
  const state = await openStateForPolicy(loaded);
  try {
    await checkTotpKey(state, key, join(stateDir, "totp.key"));
  } catch (err) {
    await state.close();
    throw err;
  }
  return totpStoreOn(state, key, totpSettings(loaded.policy), true);
}

/** The lockout on the policy's login state (its own connection, closed by `close()`). */
export async function openLockoutForPolicy(loaded: LoadedPolicy): Promise<Lockout> {
  return lockoutOn(await openStateForPolicy(loaded), lockoutSettings(loaded.policy), true);
}

/** This gateway's name in audit seals and anchors: `gateway.node`, else the host name. */
export function nodeName(policy: Policy): string {
  return policy.gateway.node ?? hostname();
}

/**
 * The forward-secure sealer for `gateway.audit_seal_state` (undefined when it is not set), for the
 * gateway's periodic seals and for `varco audit prune` (which seals its checkpoint).
 * @throws SealStateError if the state file is missing, unsafe or malformed.
 */
export function sealerForPolicy(loaded: LoadedPolicy, audit: AuditStore): Sealer | undefined {
  const file = loaded.policy.gateway.audit_seal_state;
  return file ? createSealer(loaded.resolvePath(file), nodeName(loaded.policy), audit) : undefined;
}

/**
 * Opens the audit store; with a logger, every change of its health (writes failing, working again) is logged;
 * with a stream sink, every committed event is handed to it (in id order).
 */
export function openAuditForPolicy(loaded: LoadedPolicy, logger?: Logger, stream?: AuditStreamSink): AuditStore {
  return openAuditStore(statePaths(loaded).auditDb, undefined, {
    ...(logger
      ? {
          onHealthChange: (h) =>
            h.ok ? logger.info({ detail: h.detail }, "audit writes work again") : logger.error({ detail: h.detail }, "audit writes fail"),
        }
      : {}),
    ...(stream
      ? {
          onCommitted: (events) => {
            for (const e of events) stream.event(e);
          },
        }
      : {}),
  });
}

/**
 * With a PostgreSQL state: connects to it (its own small pool) and starts shipping this node's
 * audit.db there (src/audit/ship.ts); undefined for SQLite.
 * @throws StateError when PostgreSQL cannot be reached or its audit tables are missing.
 */
export async function shipperForPolicy(
  loaded: LoadedPolicy,
  logger: Logger,
): Promise<(AuditShipper & { replicaClose(): Promise<void> }) | undefined> {
  const url = postgresUrl({ state: loaded.policy.state, resolvePath: (x) => loaded.resolvePath(x) });
  if (url === undefined) return undefined;
  const replica = await openAuditReplica(url);
  const shipper = startShipper({
    file: statePaths(loaded).auditDb,
    node: nodeName(loaded.policy),
    replica,
    log: {
      info: (o, m) => logger.info(o, m),
      warn: (o, m) => logger.warn(o, m),
      error: (o, m) => logger.error(o, m),
    },
  });
  return { ...shipper, replicaClose: () => replica.close() };
}

/**
 * The remote syslog sink for `gateway.audit_syslog` (undefined when it is not set). Read at start only.
 * @throws StartupError if the URL is invalid or the CA file unreadable.
 */
export function syslogForPolicy(loaded: LoadedPolicy, logger: Logger): SyslogSink | undefined {
  const c = loaded.policy.gateway.audit_syslog;
  if (!c) return undefined;
  try {
    return createSyslogSink({
      url: c.url,
      caFile: c.ca_file ? loaded.resolvePath(c.ca_file) : undefined,
      appName: c.app_name,
      node: nodeName(loaded.policy),
      logger,
    });
  } catch (err) {
    throw new StartupError(`gateway.audit_syslog: ${(err as Error).message}`);
  }
}

/** With a PostgreSQL state: where the web console mirrors the other nodes' trails (`<state_dir>/mirror`); undefined for SQLite. */
function webMirror(loaded: LoadedPolicy): { url: string; dir: string; node: string } | undefined {
  const url = postgresUrl({ state: loaded.policy.state, resolvePath: (x) => loaded.resolvePath(x) });
  if (url === undefined) return undefined;
  return { url, dir: join(statePaths(loaded).stateDir, "mirror"), node: nodeName(loaded.policy) };
}

export interface RunningGateway {
  readonly gateway: Gateway;
  readonly ports: readonly number[];
  /** Validates the policy file again and swaps a new runtime in; on error the old one stays. */
  reload(): Promise<LoadedPolicy | PolicyError>;
  /** Readiness checks (also served on /healthz). */
  checks(): Promise<HealthCheck[]>;
  /** Liveness checks (served on /livez, asked by keepalived): audit DB writable, listener bound; not the directory. */
  liveness(): Promise<HealthCheck[]>;
  /** The policy the gateway runs with now (the last one loaded or reloaded successfully). */
  policy(): LoadedPolicy;
  /**
   * Stops: no new connections, sessions drain for up to `drainMs` (default: the running policy's
   * `gateway.stop_timeout`; the file on disk is not read again, so a broken file cannot stall a stop),
   * the DB is closed.
   */
  stop(drainMs?: number): Promise<void>;
}

/** Reads the directory settings of a policy into an LDAP client (used by `serve` and `doctor`). */
export function directoryForPolicy(loaded: LoadedPolicy): LdapDirectory | undefined {
  const p = loaded.policy;
  const ldap = p.directory.ldap;
  if (!ldap) return undefined;
  return createLdapDirectory({
    url: ldap.url,
    bindDn: ldap.bind_dn,
    bindPassword: readSecret(
      ldap.bind_password_file.startsWith("env:") ? ldap.bind_password_file : loaded.resolvePath(ldap.bind_password_file),
      "directory.ldap.bind_password_file",
    ),
    userBase: ldap.user_base,
    userFilter: ldap.user_filter,
    uidAttribute: ldap.uid_attribute,
    accountFilter: ldap.account_filter,
    groupBase: ldap.group_base,
    groupFilter: ldap.group_filter,
    groupAttribute: ldap.group_attribute,
    sshKeyAttribute: ldap.ssh_key_attribute,
    totpAttribute: p.auth.totp.secrets === "ldap" ? p.auth.totp.ldap_attribute : undefined,
    caFile: ldap.tls.ca_file ? loaded.resolvePath(ldap.tls.ca_file) : undefined,
    startTls: ldap.tls.starttls,
    timeoutMs: ldap.timeout,
  });
}

/**
 * The canonical uid an administrator's typed uid refers to, as a login would resolve it: a
 * break-glass user's configured uid (case-insensitive), else the directory entry's own
 * `uid_attribute`. Falls back to the typed uid when the directory has no such entry or cannot be
 * asked (`resolved` says which).
 */
export async function canonicalUid(
  loaded: LoadedPolicy,
  typed: string,
): Promise<{ uid: string; resolved: "local" | "directory" | "as_typed"; problem?: string }> {
  const folded = typed.normalize("NFC").toLowerCase();
  const local = loaded.policy.directory.local_users.find((u) => u.uid.normalize("NFC").toLowerCase() === folded);
  if (local) return { uid: local.uid, resolved: "local" };
  if (!loaded.policy.directory.ldap) return { uid: typed, resolved: "as_typed" };
  try {
    const v = await directoryForPolicy(loaded)?.lookup(typed);
    if (v?.kind === "ok" || v?.kind === "inactive") return { uid: v.uid, resolved: "directory" };
    return { uid: typed, resolved: "as_typed", problem: "the directory has no such user" };
  } catch (err) {
    // The directory cannot be asked: the typed uid is used as given.
    return { uid: typed, resolved: "as_typed", problem: `the directory could not be asked (${(err as Error).message})` };
  }
}

/** SHA-256 (hex) of a file's bytes, for log lines that say which version of the policy was read. */
function fileDigest(file: string): string | undefined {
  try {
    return createHash("sha256").update(readFileSync(file)).digest("hex");
  } catch {
    return undefined;
  }
}

/** The stores that outlive a reload (their location cannot change live). */
interface Stores {
  readonly totp: TotpStore;
  readonly lockout: Lockout;
  /** The login state itself (remembered second factors, `auth.totp.remember`). */
  readonly state: AuthState;
}

/**
 * Builds everything a policy decides about logins — directory client, break-glass users, TOTP and
 * lockout settings, enrolment — as one runtime that a reload swaps atomically.
 */
async function buildRuntime(loaded: LoadedPolicy, stores: Stores): Promise<GatewayRuntime & { directory: Directory | undefined }> {
  const p = loaded.policy;
  const directory = directoryForPolicy(loaded);
  const local = await createLocalUsers(
    p.directory.local_users.map((u) => ({ uid: u.uid, passwordHash: u.password_hash, groups: u.groups })),
  );
  // Break-glass users' TOTP secrets come from their files the first time (then they live in the store).
  const localSecrets: (readonly [string, string])[] = [];
  for (const u of p.directory.local_users) {
    if (!u.totp_secret_file || (await stores.totp.hasSecret(u.uid))) continue;
    localSecrets.push([
      u.uid,
      readSecret(loaded.resolvePath(u.totp_secret_file as string), `directory.local_users[${u.uid}].totp_secret_file`),
    ]);
  }
  for (const [uid, secret] of localSecrets) await stores.totp.setSecret(uid, secret);
  stores.lockout.configure(lockoutSettings(p));
  const authenticator = createAuthenticator({
    directory,
    local,
    totp: stores.totp,
    totpSettings: totpSettings(p),
    lockout: stores.lockout,
    enrolOnFirstLogin: p.auth.totp.enrol_on_first_login,
    totpFromDirectory: p.auth.totp.secrets === "ldap",
    publickey: {
      fromDirectory: p.auth.publickey.from_directory,
      keysFile: p.auth.publickey.keys_file ? loaded.resolvePath(p.auth.publickey.keys_file) : undefined,
    },
    remember: { periodMs: p.auth.totp.remember, state: stores.state },
  });
  return { policy: p, authenticator, uidPattern: new RegExp(p.auth.uid_pattern, "u"), directory };
}

/**
 * What cannot change while the gateway runs: listeners, keys, the metrics listener, where state
 * lives, the TOTP settings the stored secrets depend on. Returns the changed keys.
 */
export function restartRequired(before: LoadedPolicy, after: LoadedPolicy, boundPorts: readonly number[] = []): string[] {
  // A listen address with port 0 is the port the kernel picked for it.
  const listen = (l: LoadedPolicy, ports: readonly number[]) =>
    l.policy.gateway.listen.map((a, i) => {
      const hp = parseHostPort(a);
      if (!hp) return a;
      return `${hp.host}:${hp.port === 0 ? (ports[i] ?? 0) : hp.port}`;
    });
  const g = (l: LoadedPolicy, ports: readonly number[]) => {
    const p = l.policy;
    return {
      "gateway.listen": listen(l, ports),
      "gateway.host_keys": p.gateway.host_keys.map((k) => l.resolvePath(k)),
      "gateway.egress_key": l.resolvePath(p.gateway.egress_key),
      "gateway.metrics_listen": p.gateway.metrics_listen,
      "gateway.state_dir": statePaths(l).stateDir,
      state: { backend: p.state.backend, url_file: p.state.url_file ? l.resolvePath(p.state.url_file) : undefined },
      "gateway.audit_signing_key": p.gateway.audit_signing_key ? l.resolvePath(p.gateway.audit_signing_key) : undefined,
      "gateway.audit_seal_state": p.gateway.audit_seal_state ? l.resolvePath(p.gateway.audit_seal_state) : undefined,
      "gateway.node": p.gateway.node,
      "gateway.audit_checkpoint_interval": p.gateway.audit_checkpoint_interval,
      "gateway.audit_syslog": p.gateway.audit_syslog,
      "auth.totp.period": p.auth.totp.period,
      "auth.totp.digits": p.auth.totp.digits,
      "web.listen": p.web?.listen,
      "web.tls": p.web?.tls ? { cert_file: l.resolvePath(p.web.tls.cert_file), key_file: l.resolvePath(p.web.tls.key_file) } : undefined,
    };
  };
  const a = g(before, boundPorts);
  const b = g(after, []);
  return (Object.keys(a) as (keyof typeof a)[]).filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
}

/**
 * Starts the gateway for a policy file: keys (made by `varco keys init`), stores, directory, listeners.
 * SIGHUP and changes of the file reload the policy atomically (new logins see it; sessions continue).
 * @throws PolicyError, StartupError, SecretError, KeyFileError with actionable messages.
 */
export async function runGateway(policyFile: string, logger: Logger, opts: { watchFile?: boolean } = {}): Promise<RunningGateway> {
  // Everything the gateway creates (audit DB, state DB, recordings, keys) is private to its user.
  process.umask(0o077);
  let loaded = loadPolicyFile(policyFile);
  const p = loaded.policy;
  // Keys are made explicitly (`varco keys init`), never silently at start.
  const hostKeys = p.gateway.host_keys.map((k) => loadKey(loaded.resolvePath(k), "gateway.host_keys:"));
  const egressKey = loadKey(loaded.resolvePath(p.gateway.egress_key), "gateway.egress_key:");
  const totpKey = loadOrCreateKey(statePaths(loaded).stateDir);
  const unsafe = checkPrivateFiles({
    policyFile: loaded.file,
    totpKeyFile: join(statePaths(loaded).stateDir, "totp.key"),
    webTlsKeyFile: p.web?.tls ? loaded.resolvePath(p.web.tls.key_file) : undefined,
  });
  if (unsafe.length > 0) throw new StartupError(unsafe.join("\n"));
  // One login state for TOTP and lockout (shared by every node on PostgreSQL). Unreachable at start: refuse to start.
  let state: AuthState;
  try {
    state = await openStateForPolicy(loaded, { logger });
  } catch (err) {
    if (err instanceof StateError) throw new StartupError(`${loaded.file}: state: ${err.message}`);
    throw err;
  }
  try {
    await checkTotpKey(state, totpKey, join(statePaths(loaded).stateDir, "totp.key"));
  } catch (err) {
    await state.close().catch(() => undefined);
    throw err instanceof StateError ? new StartupError(`${loaded.file}: state: ${err.message}`) : err;
  }
  logger.info({ backend: state.engine, where: state.where }, "login state opened");
  const totp = totpStoreOn(state, totpKey, totpSettings(p));
  const lockout = lockoutOn(state, lockoutSettings(p));
  const closeState = () => void state.close().catch(() => undefined);
  const stores: Stores = { totp, lockout, state };
  let runtime: Awaited<ReturnType<typeof buildRuntime>>;
  try {
    runtime = await buildRuntime(loaded, stores);
  } catch (err) {
    closeState();
    throw err;
  }
  const directory = () => runtime.directory;
  let syslog: SyslogSink | undefined;
  try {
    syslog = syslogForPolicy(loaded, logger);
  } catch (err) {
    closeState();
    throw err;
  }
  // With a PostgreSQL state, committed events are shipped there too (the local audit.db is the spool).
  let shipper: (AuditShipper & { replicaClose(): Promise<void> }) | undefined;
  const committed: AuditStreamSink | undefined =
    state.engine === "postgres"
      ? {
          event: (e) => {
            syslog?.event(e);
            shipper?.nudge();
          },
          anchor: (a) => syslog?.anchor(a),
          close: async (ms) => syslog?.close(ms),
        }
      : syslog;
  const localAudit = openAuditForPolicy(loaded, logger, committed);
  const interrupted = localAudit.closeInterrupted();
  if (interrupted > 0) logger.warn({ interrupted }, "closed sessions left open by an earlier stop as interrupted");
  try {
    shipper = await shipperForPolicy(loaded, logger);
  } catch (err) {
    localAudit.close();
    void syslog?.close(0);
    closeState();
    throw err instanceof StateError ? new StartupError(`${loaded.file}: state: ${err.message}`) : err;
  }
  // New sessions are refused while the spool of unshipped events is full (live ones go on, recorded locally).
  const audit: AuditStore = shipper
    ? {
        ...localAudit,
        healthy: () => {
          const h = localAudit.healthy();
          const s = shipper?.health();
          return h.ok && s && !s.ok ? { ok: false, detail: s.detail } : h;
        },
      }
    : localAudit;

  const metrics = createMetrics();
  const gateway = createGateway({
    metrics,
    runtime: () => runtime,
    hostKeys,
    egressKey,
    audit,
    logger,
    recordingsDir: () => statePaths(loaded).recordingsDir,
    now: () => Date.now(),
  });
  // Signed checkpoints of the audit chain head (ed25519), if a signing key is configured.
  const signingKeyFile = p.gateway.audit_signing_key ? loaded.resolvePath(p.gateway.audit_signing_key) : undefined;
  const signingKey = signingKeyFile ? createPrivateKey(readSecret(signingKeyFile, "gateway.audit_signing_key")) : undefined;
  // Forward-secure seals of the chain head (HMAC ratchet), each logged as an "audit anchor" line for journald.
  let sealer: Sealer | undefined;
  try {
    sealer = sealerForPolicy(loaded, audit);
  } catch (err) {
    audit.close();
    void syslog?.close(0);
    closeState();
    throw new StartupError((err as Error).message);
  }
  const signHead = () => {
    if (signingKey) {
      try {
        audit.signHead(signingKey);
      } catch (err) {
        logger.error({ err: (err as Error).message }, "could not sign the audit chain head");
      }
    }
    if (sealer) {
      try {
        const row = sealer.sealHead();
        if (row) {
          const anchor = anchorOf(row);
          logger.info({ anchor }, "audit anchor");
          syslog?.anchor(anchor);
        }
      } catch (err) {
        logger.error({ err: (err as Error).message }, "could not seal the audit chain head");
      }
    }
  };
  signHead();
  const signer = signingKey || sealer ? setInterval(signHead, p.gateway.audit_checkpoint_interval) : undefined;
  signer?.unref();

  const bound = await gateway.listen(p.gateway.listen);
  logger.info({ listen: bound.map((b) => `${b.address}:${b.port}`), policy: loaded.file }, "gateway listening");

  // Directory health: a service bind every 30 s (and at start); readiness needs one within 90 s.
  let directoryOkAt = 0;
  let directoryError = "not checked yet";
  const pingDirectory = async () => {
    const dir = directory();
    if (!dir) return;
    try {
      await dir.ping();
      directoryOkAt = Date.now();
    } catch (err) {
      directoryError = (err as Error).message;
      metrics.ldapError();
      logger.warn({ err: directoryError }, "directory health check failed");
    }
  };
  await pingDirectory();
  const pinger = setInterval(() => void pingDirectory(), 30_000);
  pinger.unref();
  let lastPing = Date.now();
  // Login state health: a round trip every 10 s (and when a probe finds the last one older than 5 s).
  let stateProblem: string | undefined;
  let statePingAt = 0;
  const pingState = async () => {
    statePingAt = Date.now();
    try {
      await state.ping();
      if (stateProblem !== undefined) logger.info({ where: state.where }, "login state reachable again");
      stateProblem = undefined;
    } catch (err) {
      if (stateProblem === undefined) logger.error({ err: (err as Error).message }, "login state unreachable: new logins are refused");
      stateProblem = (err as Error).message;
    }
  };
  await pingState();
  const statePinger = setInterval(() => void pingState(), 10_000);
  statePinger.unref();
  const checks = async (): Promise<HealthCheck[]> => {
    // A health probe asks the directory itself when the last answer is older than 5 s (bounded by ldap.timeout).
    if (directory() && Date.now() - lastPing > 5000) {
      lastPing = Date.now();
      directoryOkAt = 0;
      await pingDirectory();
    }
    if (Date.now() - statePingAt > 5000) await pingState();
    return checkList();
  };
  // Liveness (GET /livez, keepalived's track_script): this process answers, its SSH listener is bound and the
  // audit DB takes writes. Never the directory: an LDAP outage seen by both nodes must not FAULT both.
  const liveList = (): HealthCheck[] => [
    // Not ok while audit writes fail or too many events wait (no lock taken; a real write probe at most once a second while failing).
    { name: "audit_db", ...audit.healthy() },
    { name: "listener", ok: bound.length > 0, detail: bound.map((b) => `${b.address}:${b.port}`).join(",") },
  ];
  const liveness = async (): Promise<HealthCheck[]> => liveList();
  const checkList = (): HealthCheck[] => [
    { name: "policy", ok: true, detail: loaded.file },
    ...liveList(),
    {
      name: "directory",
      ok: !directory() || Date.now() - directoryOkAt < 90_000,
      detail: !directory()
        ? "local users only"
        : directoryOkAt
          ? `answered ${Math.round((Date.now() - directoryOkAt) / 1000)} s ago`
          : directoryError,
    },
    { name: "state", ok: stateProblem === undefined, detail: stateProblem ?? `${state.engine} ${state.where}` },
    ...(shipper ? [{ name: "audit_shipping", ...shipper.health() }] : []),
  ];
  const metricsAt = p.gateway.metrics_listen ? parseHostPort(p.gateway.metrics_listen) : undefined;
  const health = metricsAt
    ? await serveHealth(
        metricsAt.host,
        metricsAt.port,
        metrics,
        checks,
        () => {
          const st = gateway.stats();
          const gen = loaded.policy.network ? readableGeneration(netDirFor(loaded)) : undefined;
          metrics.setGauges({
            sessions: st.sessions,
            unauthenticated: st.unauthenticated,
            netGeneration: gen?.id,
            netAppliedAt: gen ? Date.parse(gen.appliedAt) : undefined,
          });
        },
        liveness,
      )
    : undefined;

  // The web console: its own listener (never an SSH or metrics port: checked with the policy).
  const webAt = p.web ? parseHostPort(p.web.listen) : undefined;
  const web = webAt
    ? await startWebForGateway({
        listen: webAt,
        tls: p.web?.tls
          ? { certFile: loaded.resolvePath(p.web.tls.cert_file), keyFile: loaded.resolvePath(p.web.tls.key_file) }
          : undefined,
        policy: () => loaded.policy,
        runtime: () => runtime,
        audit,
        auditDb: statePaths(loaded).auditDb,
        mirror: webMirror(loaded),
        live: gateway,
        unlock: async (typed) => {
          const { uid } = await canonicalUid(loaded, typed);
          return { uid, forgotten: await lockout.unlock(uid) };
        },
        logger,
      }).catch(async (err: Error) => {
        await health?.close();
        await gateway.close(0);
        await shipper?.stop(0);
        await shipper?.replicaClose();
        audit.close();
        closeState();
        throw new StartupError(`web.listen ${p.web?.listen}: ${err.message}`);
      })
    : undefined;
  if (web) logger.info({ listen: `${web.address.address}:${web.address.port}`, tls: Boolean(p.web?.tls) }, "web console listening");

  /**
   * Reload: a whole new runtime from the new policy, swapped in one assignment; on any error the old
   * one stays. Reloads run one at a time, in order, so a slow older one never overwrites a newer one.
   */
  let reloading: Promise<unknown> = Promise.resolve();
  const reload = (): Promise<LoadedPolicy | PolicyError> => {
    const next = reloading.then(reloadNow, reloadNow);
    reloading = next;
    return next;
  };
  const reloadNow = async (): Promise<LoadedPolicy | PolicyError> => {
    // Read first: a refusal names the version of the file it refused.
    const digest = fileDigest(policyFile);
    try {
      const next = loadPolicyFile(policyFile);
      const changed = restartRequired(
        loaded,
        next,
        bound.map((b) => b.port),
      );
      if (changed.length > 0) {
        throw new PolicyError(
          changed.map((k) => ({
            file: next.file,
            line: 1,
            col: 1,
            message: `${k} changed: restart required (the running gateway keeps its last good policy)`,
          })),
        );
      }
      const nextRuntime = await buildRuntime(next, stores);
      loaded = next;
      runtime = nextRuntime;
      logger.info({ policy: next.file, sha256: next.sha256 }, "policy reloaded");
      metrics.policyReload("ok");
      audit.append({ type: "policy_reload", result: "ok", data: { file: next.file } });
      gateway.policyChanged();
      return next;
    } catch (err) {
      const e =
        err instanceof PolicyError ? err : new PolicyError([{ file: policyFile, line: 1, col: 1, message: (err as Error).message }]);
      logger.error(
        { errors: e.issues.map((i) => `${i.file}:${i.line}:${i.col}: ${i.message}`), sha256: digest },
        "policy reload refused; keeping the last good policy",
      );
      metrics.policyReload("refused");
      audit.append({ type: "policy_reload", result: "refused", data: { file: policyFile, errors: e.issues.map((i) => i.message) } });
      return e;
    }
  };
  // Refused logins while a uid or source is locked are counted, not written one by one: a summary row per minute.
  const flushLockedAttempts = () => {
    for (const a of lockout.takeLockedAttempts()) {
      audit.append({
        type: "login_refused",
        uid: a.uid || undefined,
        source: a.source,
        result: "locked",
        data: { attempts: a.count, first_at: new Date(a.firstAt).toISOString(), last_at: new Date(a.lastAt).toISOString() },
      });
    }
  };
  const lockedFlusher = setInterval(flushLockedAttempts, 60_000);
  lockedFlusher.unref();
  const onHup = () => void reload();
  process.on("SIGHUP", onHup);
  let debounce: NodeJS.Timeout | undefined;
  const watcher = opts.watchFile
    ? watch(loaded.file, () => {
        clearTimeout(debounce);
        debounce = setTimeout(reload, 200);
      })
    : undefined;

  return {
    gateway,
    ports: bound.map((b) => b.port),
    reload,
    checks,
    liveness,
    policy: () => loaded,
    async stop(drainMs = loaded.policy.gateway.stop_timeout) {
      process.off("SIGHUP", onHup);
      watcher?.close();
      clearTimeout(debounce);
      clearInterval(pinger);
      clearInterval(statePinger);
      await health?.close();
      await web?.close();
      await gateway.close(drainMs);
      clearInterval(signer);
      clearInterval(lockedFlusher);
      flushLockedAttempts();
      signHead();
      await state.close().catch((err: Error) => logger.error({ err: err.message }, "login state could not be closed"));
      try {
        audit.flush();
      } catch (err) {
        logger.error({ err: (err as Error).message }, "audit events could not be written before the stop");
      }
      if (shipper) {
        const left = await shipper.stop(5000);
        if (left > 0)
          logger.warn(
            { pending: left },
            "audit events not yet shipped to PostgreSQL stay in the local audit.db; the next start ships them",
          );
        await shipper.replicaClose();
      }
      try {
        audit.close();
      } catch (err) {
        logger.error({ err: (err as Error).message }, "audit events could not be written before the stop");
      }
      await syslog?.close();
    },
  };
}

/** The folder of the network generations: `network.state_dir`, else `<gateway.state_dir>/net`. */
export function netDirFor(loaded: LoadedPolicy): string {
  const own = loaded.policy.network?.state_dir;
  return own ? loaded.resolvePath(own) : netStateDir(statePaths(loaded).stateDir);
}

/** The current generation for the metrics, or undefined when the gateway's user may not read it (root-owned). */
function readableGeneration(dir: string): ReturnType<typeof currentGeneration> {
  try {
    return currentGeneration(dir);
  } catch {
    return undefined;
  }
}

/** The desired network state and where its generations live, for the `varco net` commands. */
export function networkContext(loaded: LoadedPolicy): {
  desired: Desired;
  netDir: string;
  network: NetworkPolicy;
  services: GatewayServices;
} {
  const network = loaded.policy.network;
  if (!network) throw new StartupError(`${loaded.file}: the policy has no network section, so varco manages no network state`);
  const authPass: Record<string, string> = {};
  for (const [i, v] of network.vips.entries()) {
    if (v.auth_pass_file) {
      const ref = v.auth_pass_file.startsWith("env:") ? v.auth_pass_file : loaded.resolvePath(v.auth_pass_file);
      const pass = readSecret(ref, `network.vips[${i}].auth_pass_file`);
      // keepalived would cut a longer auth_pass silently (keepalived.conf(5)): refuse it here, naming the key.
      const bad = authPassProblem(`${loaded.file}: network.vips[${i}].auth_pass_file (${ref})`, pass);
      if (bad) throw new StartupError(bad);
      authPass[v.instance] = pass;
    }
  }
  const probe = fileURLToPath(new URL("../bin/varco-health.mjs", import.meta.url));
  const listen = loaded.policy.gateway.metrics_listen ?? "127.0.0.1:9108";
  const healthCommand = network.keepalived.health_command ?? `${process.execPath} ${probe} ${listen}`;
  const resolved: NetworkPolicy = {
    ...network,
    keepalived: {
      ...network.keepalived,
      config_file: loaded.resolvePath(network.keepalived.config_file),
      main_config: loaded.resolvePath(network.keepalived.main_config),
      pid_file: loaded.resolvePath(network.keepalived.pid_file),
    },
  };
  const gw = loaded.policy.gateway;
  const services: GatewayServices = {
    listen: gw.listen.map((l) => parseHostPort(l)).filter((x): x is ServiceAddress => x !== undefined),
    metrics: gw.metrics_listen ? parseHostPort(gw.metrics_listen) : undefined,
  };
  let desired: Desired;
  try {
    desired = desiredState(resolved, { authPass, healthCommand }, services);
  } catch (err) {
    if (err instanceof KeepalivedConfigError) throw new StartupError(`${loaded.file}: ${err.message}`);
    throw err;
  }
  return {
    desired,
    netDir: netDirFor(loaded),
    network: resolved,
    services,
  };
}
