/**
 * Composition root: the only place that wires implementations together (policy → directory,
 * TOTP store, audit store, keys → SSH gateway). The CLI calls into here.
 */
import { createPrivateKey } from "node:crypto";
import { watch } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type AuditStore, openAuditStore } from "./audit/index.ts";
import {
  createAuthenticator,
  createLdapDirectory,
  createLocalUsers,
  type Lockout,
  openLockout,
  openTotpStore,
  type TotpSettings,
  type TotpStore,
} from "./auth/index.ts";
import { currentGeneration, type Desired, desiredState, netStateDir } from "./net/index.ts";
import { createMetrics, type HealthCheck, type Logger, serveHealth } from "./obs/index.ts";
import {
  type LoadedPolicy,
  loadPolicyFile,
  type NetworkPolicy,
  type Policy,
  PolicyError,
  parseHostPort,
  readSecret,
} from "./policy/index.ts";
import { createGateway, type Gateway, loadOrCreateKey } from "./ssh/index.ts";

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

export function openTotpForPolicy(loaded: LoadedPolicy): TotpStore {
  return openTotpStore(statePaths(loaded).stateDir, totpSettings(loaded.policy));
}

export function openLockoutForPolicy(loaded: LoadedPolicy): Lockout {
  const l = loaded.policy.auth.lockout;
  return openLockout(statePaths(loaded).stateDir, {
    maxFailures: l.max_failures,
    withinMs: l.within,
    lockForMs: l.lock_for,
    maxFailuresPerSource: l.max_failures_per_source,
  });
}

export function openAuditForPolicy(loaded: LoadedPolicy): AuditStore {
  return openAuditStore(statePaths(loaded).auditDb);
}

function checkSupported(policy: Policy): void {
  if (policy.auth.totp.secrets === "ldap" && !policy.directory.ldap) throw new StartupError("auth.totp.secrets: ldap needs directory.ldap");
}

export interface RunningGateway {
  readonly gateway: Gateway;
  readonly ports: readonly number[];
  /** Validates the policy file again and swaps it in; on error the old policy stays. */
  reload(): LoadedPolicy | PolicyError;
  /** Readiness checks (also served on /healthz). */
  checks(): Promise<HealthCheck[]>;
  /** Stops: no new connections, sessions drain for up to `drainMs`, the DB is closed. */
  stop(drainMs?: number): Promise<void>;
}

/**
 * Starts the gateway for a policy file: keys (generated if missing), stores, directory, listeners.
 * SIGHUP and changes of the file reload the policy atomically (new logins see it; sessions continue).
 * @throws PolicyError, StartupError, SecretError, KeyFileError with actionable messages.
 */
export async function runGateway(policyFile: string, logger: Logger, opts: { watchFile?: boolean } = {}): Promise<RunningGateway> {
  // Everything the gateway creates (audit DB, state DB, recordings, keys) is private to its user.
  process.umask(0o077);
  let loaded = loadPolicyFile(policyFile);
  checkSupported(loaded.policy);
  for (const r of loaded.policy.routes) {
    if (r.allow.agent_forwarding || r.allow.x11) {
      logger.warn(
        { alias: r.alias },
        "allow.agent_forwarding and allow.x11 are not implemented yet: such requests are refused on every route",
      );
    }
  }
  const p = loaded.policy;
  const ldap = p.directory.ldap;
  const hostKeys = p.gateway.host_keys.map((k) => loadOrCreateKey(loaded.resolvePath(k), "varco-host"));
  const egressKey = loadOrCreateKey(loaded.resolvePath(p.gateway.egress_key), "varco-egress");
  const directory =
    ldap &&
    createLdapDirectory({
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
  const totp = openTotpForPolicy(loaded);
  const lockout = openLockoutForPolicy(loaded);
  const local = await createLocalUsers(
    p.directory.local_users.map((u) => ({ uid: u.uid, passwordHash: u.password_hash, groups: u.groups })),
  );
  // Break-glass users' TOTP secrets come from their files the first time (then they live in the store).
  for (const u of p.directory.local_users) {
    if (u.totp_secret_file && !totp.hasSecret(u.uid))
      totp.setSecret(u.uid, readSecret(loaded.resolvePath(u.totp_secret_file), `directory.local_users[${u.uid}].totp_secret_file`));
  }
  const audit = openAuditForPolicy(loaded);
  const interrupted = audit.closeInterrupted();
  if (interrupted > 0) logger.warn({ interrupted }, "closed sessions left open by an earlier stop as interrupted");

  const metrics = createMetrics();
  const gateway = createGateway({
    metrics,
    policy: () => loaded.policy,
    hostKeys,
    egressKey,
    authenticator: createAuthenticator({
      directory,
      local,
      totp,
      totpSettings: totpSettings(p),
      lockout,
      enrolOnFirstLogin: p.auth.totp.enrol_on_first_login,
      totpFromDirectory: p.auth.totp.secrets === "ldap",
      publickey: {
        fromDirectory: p.auth.publickey.from_directory,
        keysFile: p.auth.publickey.keys_file ? loaded.resolvePath(p.auth.publickey.keys_file) : undefined,
      },
    }),
    audit,
    logger,
    recordingsDir: () => statePaths(loaded).recordingsDir,
    now: () => Date.now(),
  });
  // Signed checkpoints of the audit chain head (ed25519), if a signing key is configured.
  const signingKeyFile = p.gateway.audit_signing_key ? loaded.resolvePath(p.gateway.audit_signing_key) : undefined;
  const signingKey = signingKeyFile ? createPrivateKey(readSecret(signingKeyFile, "gateway.audit_signing_key")) : undefined;
  const signHead = () => {
    if (!signingKey) return;
    try {
      audit.signHead(signingKey);
    } catch (err) {
      logger.error({ err: (err as Error).message }, "could not sign the audit chain head");
    }
  };
  signHead();
  const signer = signingKey ? setInterval(signHead, p.gateway.audit_checkpoint_interval) : undefined;
  signer?.unref();

  const bound = await gateway.listen(p.gateway.listen);
  logger.info({ listen: bound.map((b) => `${b.address}:${b.port}`), policy: loaded.file }, "gateway listening");

  // Directory health: a service bind every 30 s (and at start); readiness needs one within 90 s.
  let directoryOkAt = 0;
  let directoryError = "not checked yet";
  const pingDirectory = async () => {
    if (!directory) return;
    try {
      await directory.ping();
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
  const checks = async (): Promise<HealthCheck[]> => {
    // A health probe asks the directory itself when the last answer is older than 5 s (bounded by ldap.timeout).
    if (directory && Date.now() - lastPing > 5000) {
      lastPing = Date.now();
      directoryOkAt = 0;
      await pingDirectory();
    }
    return checkList();
  };
  const checkList = (): HealthCheck[] => [
    { name: "policy", ok: true, detail: loaded.file },
    { name: "audit_db", ok: audit.writable(), detail: statePaths(loaded).auditDb },
    { name: "listener", ok: bound.length > 0, detail: bound.map((b) => `${b.address}:${b.port}`).join(",") },
    {
      name: "directory",
      ok: !directory || Date.now() - directoryOkAt < 90_000,
      detail: !directory
        ? "local users only"
        : directoryOkAt
          ? `answered ${Math.round((Date.now() - directoryOkAt) / 1000)} s ago`
          : directoryError,
    },
  ];
  const metricsAt = p.gateway.metrics_listen ? parseHostPort(p.gateway.metrics_listen) : undefined;
  const health = metricsAt
    ? await serveHealth(metricsAt.host, metricsAt.port, metrics, checks, () => {
        const st = gateway.stats();
        const gen = loaded.policy.network ? currentGeneration(netStateDir(statePaths(loaded).stateDir)) : undefined;
        metrics.setGauges({
          sessions: st.sessions,
          unauthenticated: st.unauthenticated,
          netGeneration: gen?.id,
          netAppliedAt: gen ? Date.parse(gen.appliedAt) : undefined,
        });
      })
    : undefined;

  const reload = (): LoadedPolicy | PolicyError => {
    try {
      const next = loadPolicyFile(policyFile);
      checkSupported(next.policy);
      loaded = next;
      logger.info({ policy: next.file }, "policy reloaded");
      metrics.policyReload("ok");
      audit.append({ type: "policy_reload", result: "ok", data: { file: next.file } });
      gateway.policyChanged();
      return next;
    } catch (err) {
      const e =
        err instanceof PolicyError ? err : new PolicyError([{ file: policyFile, line: 1, col: 1, message: (err as Error).message }]);
      logger.error(
        { errors: e.issues.map((i) => `${i.file}:${i.line}:${i.col}: ${i.message}`) },
        "policy reload refused; keeping the last good policy",
      );
      return e;
    }
  };
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
    async stop(drainMs = 0) {
      process.off("SIGHUP", onHup);
      watcher?.close();
      clearTimeout(debounce);
      clearInterval(pinger);
      await health?.close();
      await gateway.close(drainMs);
      clearInterval(signer);
      signHead();
      totp.close();
      lockout.close();
      audit.close();
    },
  };
}

/** The desired network state and where its generations live, for the `varco net` commands. */
export function networkContext(loaded: LoadedPolicy): { desired: Desired; stateDir: string; network: NetworkPolicy } {
  const network = loaded.policy.network;
  if (!network) throw new StartupError(`${loaded.file}: the policy has no network section, so varco manages no network state`);
  const authPass: Record<string, string> = {};
  for (const v of network.vips) {
    if (v.auth_pass_file) {
      const ref = v.auth_pass_file.startsWith("env:") ? v.auth_pass_file : loaded.resolvePath(v.auth_pass_file);
      authPass[v.instance] = readSecret(ref, `network.vips[${v.instance}].auth_pass_file`);
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
      pid_file: loaded.resolvePath(network.keepalived.pid_file),
    },
  };
  return { desired: desiredState(resolved, { authPass, healthCommand }), stateDir: statePaths(loaded).stateDir, network: resolved };
}
