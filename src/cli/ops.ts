/**
 * Operations commands: `varco health`, `varco doctor`, `varco keys scan`. Thin: they call inwards.
 */
import { accessSync, constants, existsSync, statSync } from "node:fs";
import { execa } from "execa";
import { directoryForPolicy } from "../main.ts";
import type { LoadedPolicy } from "../policy/index.ts";
import { connectUpstream, HostKeyMismatchError, loadKey, parseHostKeyLine, scanHostKeys } from "../ssh/index.ts";

export interface DoctorRow {
  readonly check: string;
  readonly ok: boolean;
  readonly detail: string;
  readonly fix?: string;
  /** ok, but worth a look (another firewall that may drop varco's traffic): printed as WARN, exit status unchanged. */
  readonly warning?: boolean;
}

/** What the read-only probes of other firewalls returned (undefined = the tool is absent or failed). */
export interface FirewallProbes {
  /** `pve-firewall status` (pve-firewall(8)): "Status: enabled/running" etc. */
  readonly pveFirewall?: string | undefined;
  /** `iptables -S FORWARD` through iptables-nft (Docker's rules live there). */
  readonly iptablesForward?: string | undefined;
  /** `iptables-legacy-save` and `ip6tables-legacy-save`, concatenated. */
  readonly legacySave?: string | undefined;
  /** `nft -j list chains` (libnftables-json(5)). */
  readonly nftChains?: string | undefined;
}

/**
 * Other firewalls that may drop the traffic varco forwards or accepts, as warnings. Pure. A packet
 * accepted by varco's chains is still dropped by any other base chain on the same hook that drops
 * it (nft(8): verdicts are per base chain), and iptables-legacy rules run beside nftables.
 */
export function firewallWarnings(p: FirewallProbes, varcoTable = "varco"): DoctorRow[] {
  const out: DoctorRow[] = [];
  const warn = (check: string, detail: string, fix: string) => out.push({ check, ok: true, warning: true, detail, fix });
  if (p.pveFirewall && /running/i.test(p.pveFirewall) && !/disabled/i.test(p.pveFirewall))
    warn(
      "pve-firewall",
      `pve-firewall is running (${p.pveFirewall.trim().split("\n")[0]}): its rules filter the same traffic before or beside varco's`,
      "allow the forwarded ports, VRRP and gateway.listen in the Proxmox firewall too, or disable it for this node/container",
    );
  if (p.iptablesForward && /^-P FORWARD DROP/m.test(p.iptablesForward)) {
    const docker = /DOCKER/.test(p.iptablesForward);
    warn(
      "iptables FORWARD",
      `the iptables FORWARD chain has policy DROP${docker ? " (Docker sets it)" : ""}: forwarded traffic varco accepts is dropped there`,
      docker
        ? 'add ACCEPT rules to DOCKER-USER for the private networks, or set "iptables": false in /etc/docker/daemon.json'
        : "iptables -P FORWARD ACCEPT, or add ACCEPT rules for the private networks",
    );
  }
  const legacyRules = (p.legacySave ?? "").split("\n").filter((l) => l.startsWith("-A ") || /^:\S+ DROP/.test(l));
  if (legacyRules.length > 0)
    warn(
      "iptables-legacy",
      `${legacyRules.length} iptables-legacy rule(s)/DROP policies are loaded: they run beside nftables and may drop varco's traffic`,
      "migrate them to nftables (iptables-legacy-save | iptables-restore-translate) or flush them",
    );
  if (p.nftChains) {
    try {
      const items = (JSON.parse(p.nftChains) as { nftables?: Array<{ chain?: Record<string, unknown> }> }).nftables ?? [];
      for (const c of items.map((i) => i.chain).filter((c): c is Record<string, unknown> => c !== undefined)) {
        if (c.table === varcoTable && c.family === "inet") continue;
        if ((c.hook === "forward" || c.hook === "input") && c.policy === "drop")
          warn(
            `nft ${String(c.family)} ${String(c.table)}`,
            `chain ${String(c.name)} (hook ${String(c.hook)}) has policy drop: it drops what varco's table accepts unless it accepts it too`,
            `review table ${String(c.family)} ${String(c.table)} (nft list table ${String(c.family)} ${String(c.table)})`,
          );
      }
    } catch {
      /* unparsable output: nothing to say */
    }
  }
  return out;
}

/** Runs the read-only probes of `firewallWarnings` on this host. Never throws. */
export async function probeFirewalls(): Promise<FirewallProbes> {
  const run = async (argv: readonly string[]) => {
    const r = await execa(argv[0] as string, argv.slice(1), { reject: false, timeout: 10_000 });
    return r.exitCode === 0 ? String(r.stdout) : undefined;
  };
  const [pve, fwd, legacy4, legacy6, chains] = await Promise.all([
    run(["pve-firewall", "status"]),
    run(["iptables", "-S", "FORWARD"]),
    run(["iptables-legacy-save"]),
    run(["ip6tables-legacy-save"]),
    run(["nft", "-j", "list", "chains"]),
  ]);
  return {
    pveFirewall: pve,
    iptablesForward: fwd,
    legacySave: legacy4 === undefined && legacy6 === undefined ? undefined : `${legacy4 ?? ""}\n${legacy6 ?? ""}`,
    nftChains: chains,
  };
}

const mode = (f: string) => statSync(f).mode & 0o777;

/** Checks the host for running varco with this policy. Never throws; every row says what to do. */
export async function doctor(loaded: LoadedPolicy): Promise<DoctorRow[]> {
  const p = loaded.policy;
  const rows: DoctorRow[] = [{ check: "policy", ok: true, detail: `${loaded.file} is valid` }];
  const keyFile = (label: string, rel: string, missingFix = "varco keys init") => {
    const f = loaded.resolvePath(rel);
    if (!existsSync(f))
      return rows.push({ check: label, ok: false, detail: `${f} is missing: the gateway will not start`, fix: missingFix });
    const m = mode(f);
    rows.push(
      (m & 0o077) === 0
        ? { check: label, ok: true, detail: `${f} (mode ${m.toString(8)})` }
        : { check: label, ok: false, detail: `${f} is mode ${m.toString(8)}`, fix: `chmod 600 ${f}` },
    );
  };
  for (const k of p.gateway.host_keys) keyFile("host key", k);
  keyFile("egress key", p.gateway.egress_key);
  if (p.web?.tls) keyFile("web TLS key", p.web.tls.key_file, "install the console's certificate key there (mode 0600)");
  const stateDir = loaded.resolvePath(p.gateway.state_dir);
  try {
    if (existsSync(stateDir)) accessSync(stateDir, constants.W_OK);
    rows.push({ check: "state dir", ok: true, detail: `${stateDir} ${existsSync(stateDir) ? "is writable" : "will be created"}` });
  } catch {
    rows.push({ check: "state dir", ok: false, detail: `${stateDir} is not writable`, fix: `chown varco: ${stateDir}` });
  }
  const ldap = p.directory.ldap;
  if (ldap) {
    try {
      // The same settings `serve` uses (group base and attribute, TOTP attribute, TLS).
      const d = directoryForPolicy(loaded);
      if (!d) throw new Error("no directory.ldap");
      await d.ping();
      rows.push({ check: "directory", ok: true, detail: `service bind to ${ldap.url} as ${ldap.bind_dn}` });
      // A server that does not publish its schema (RFC 4512 §4.2) is not checked.
      const unknown = await d.unknownAttributes().catch(() => []);
      if (unknown.length > 0)
        rows.push({
          check: "directory schema",
          ok: false,
          detail: `the server's schema does not define ${unknown.join(", ")}: every user would be refused`,
          fix: "fix directory.ldap.uid_attribute / account_filter, or load the schema that defines them",
        });
    } catch (err) {
      rows.push({
        check: "directory",
        ok: false,
        detail: (err as Error).message,
        fix: "check directory.ldap url, bind_dn, the password file and tls.ca_file",
      });
    }
  }
  const egressFile = loaded.resolvePath(p.gateway.egress_key);
  const egress = existsSync(egressFile) ? loadKey(egressFile, "gateway.egress_key:") : undefined;
  for (const [name, t] of Object.entries(p.targets)) {
    if (!egress) {
      rows.push({
        check: `target ${name}`,
        ok: false,
        detail: "no egress key yet",
        fix: "start the gateway once, or run varco doctor after it created keys/",
      });
      continue;
    }
    if (t.user === undefined) {
      // Without target.user each user logs in as their own uid: no single account to try the egress key with.
      rows.push(await pinnedHostKeyRow(name, t.host, t.port, t.host_key));
      continue;
    }
    try {
      const c = await connectUpstream({
        name,
        host: t.host,
        port: t.port,
        username: t.user,
        privateKey: egress,
        hostKey: parseHostKeyLine(t.host_key),
        timeoutMs: 5000,
      });
      c.end();
      rows.push({ check: `target ${name}`, ok: true, detail: `${t.host}:${t.port}: pinned host key matches, egress key accepted` });
    } catch (err) {
      const mismatch = err instanceof HostKeyMismatchError;
      rows.push({
        check: `target ${name}`,
        ok: false,
        detail: (err as Error).message,
        fix: mismatch
          ? `verify the VM, then: varco keys scan ${t.host}:${t.port}`
          : "check the address, and that keys/egress_ed25519.pub is in the target user's authorized_keys",
      });
    }
  }
  for (const [bin, pkg, needed] of [
    ["nft", "nftables", Boolean(p.network)],
    ["keepalived", "keepalived", Boolean(p.network?.vips.length)],
  ] as const) {
    const r = await execa("which", [bin], { reject: false });
    rows.push(
      r.exitCode === 0
        ? { check: bin, ok: true, detail: String(r.stdout).trim() }
        : {
            check: bin,
            ok: !needed,
            detail: needed ? "not installed, and the policy needs it" : "not installed (not needed by this policy)",
            ...(needed ? { fix: `apt-get install ${pkg}` } : {}),
          },
    );
  }
  if (p.network) rows.push(...firewallWarnings(await probeFirewalls(), p.network.table));
  return rows;
}

/** A target without `user`: its offered host key against the pinned one (the egress key is not tried). */
async function pinnedHostKeyRow(name: string, host: string, port: number, pinned: string): Promise<DoctorRow> {
  const check = `target ${name}`;
  try {
    const want = parseHostKeyLine(pinned);
    const offered = await scanHostKeys(host, port);
    const match = offered.some((k) => parseHostKeyLine(k.line).blob.equals(want.blob));
    return match
      ? {
          check,
          ok: true,
          detail: `${host}:${port}: pinned host key matches; users log in as their own uid (target.user unset), so the egress key was not tried`,
        }
      : {
          check,
          ok: false,
          detail: `${host}:${port} does not offer the pinned host key`,
          fix: `verify the VM, then: varco keys scan ${host}:${port}`,
        };
  } catch (err) {
    return { check, ok: false, detail: `${host}:${port}: ${(err as Error).message}`, fix: "check the address and that sshd runs" };
  }
}

export { scanHostKeys };
