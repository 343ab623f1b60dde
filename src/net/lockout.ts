/**
 * Admin lockout refusal: before `varco net apply`, the administrator's own SSH connection
 * (`SSH_CONNECTION`, sshd(8) ENVIRONMENT: "client_ip client_port server_ip server_port") is
 * replayed as a new connection through `admits()`, the pure mirror of the rendered input chain
 * and port forwards. A ruleset that would drop it, or DNAT it to a VM, is refused unless forced:
 * the current session survives (conntrack keeps it established) but the next login would fail.
 */
import { readFileSync } from "node:fs";
import ipaddr from "ipaddr.js";
import type { NetworkPolicy } from "../policy/index.ts";
import { admits, type GatewayServices, type InputVerdict } from "./input.ts";
import type { CommandRunner } from "./runner.ts";

/** The four fields of `SSH_CONNECTION`. */
export interface SshConnection {
  readonly clientIp: string;
  readonly clientPort: number;
  readonly serverIp: string;
  readonly serverPort: number;
}

/** Parses `SSH_CONNECTION`; undefined when absent or malformed. IPv4-mapped IPv6 addresses are unmapped. */
export function parseSshConnection(text: string | undefined): SshConnection | undefined {
  const parts = text?.trim().split(/\s+/) ?? [];
  if (parts.length !== 4) return undefined;
  const [c, cp, s, sp] = parts as [string, string, string, string];
  if (!ipaddr.isValid(c) || !ipaddr.isValid(s) || !/^\d{1,5}$/.test(cp) || !/^\d{1,5}$/.test(sp)) return undefined;
  const port = Number(sp);
  if (port < 1 || port > 65535) return undefined;
  return { clientIp: ipaddr.process(c).toString(), clientPort: Number(cp), serverIp: ipaddr.process(s).toString(), serverPort: port };
}

/**
 * `SSH_CONNECTION` of this process; under sudo (`SUDO_USER` set: sudo's env_reset drops
 * SSH_CONNECTION, sudoers(5)) that of the nearest ancestor that has it in /proc/PID/environ
 * (proc(5)), at most 64 ancestors up. `readProc(pid, file)` is injectable for tests; it returns
 * undefined when unreadable.
 */
export function findSshConnection(
  env: NodeJS.ProcessEnv = process.env,
  pid: number = process.ppid,
  readProc: (pid: number, file: "environ" | "stat") => string | undefined = defaultReadProc,
): string | undefined {
  if (env.SSH_CONNECTION) return env.SSH_CONNECTION;
  if (!env.SUDO_USER) return undefined;
  let p = pid;
  for (let i = 0; i < 64 && p > 1; i++) {
    const environ = readProc(p, "environ");
    const hit = environ?.split("\0").find((kv) => kv.startsWith("SSH_CONNECTION="));
    if (hit) return hit.slice("SSH_CONNECTION=".length);
    // /proc/PID/stat: "pid (comm) state ppid …" (proc(5)); comm may contain spaces or parentheses.
    const stat = readProc(p, "stat");
    const after = stat?.slice(stat.lastIndexOf(")") + 2).split(" ");
    const parent = Number(after?.[1]);
    if (!Number.isInteger(parent) || parent === p) return undefined;
    p = parent;
  }
  return undefined;
}

function defaultReadProc(pid: number, file: "environ" | "stat"): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, "utf8");
  } catch {
    return undefined;
  }
}

/** The interface a packet from `clientIp` arrives on, assuming symmetric routing (`ip -j route get`, ip-route(8)). */
export async function routeDevice(r: CommandRunner, clientIp: string): Promise<string | undefined> {
  const res = await r.run(["ip", "-j", "route", "get", clientIp], { allowFailure: true });
  if (res.exitCode !== 0) return undefined;
  try {
    const routes = JSON.parse(res.stdout) as Array<{ dev?: string }>;
    return routes[0]?.dev;
  } catch {
    return undefined;
  }
}

/**
 * Why applying `n` would lock out the administrator connected as `conn` (arriving on `iif`), or
 * undefined when a new connection like theirs is still accepted. The message names the key and
 * the fix.
 */
export function lockoutRefusal(
  n: NetworkPolicy,
  services: GatewayServices | undefined,
  conn: SshConnection,
  iif: string,
): string | undefined {
  const v: InputVerdict = admits(n, services, {
    iif,
    saddr: conn.clientIp,
    daddr: conn.serverIp,
    protocol: "tcp",
    dport: conn.serverPort,
  });
  if (v.verdict === "accept") return undefined;
  const who = `${conn.clientIp} → ${conn.serverIp}:${conn.serverPort} (your SSH_CONNECTION, arriving on ${iif})`;
  const src = `${conn.clientIp}/${ipaddr.parse(conn.clientIp).kind() === "ipv4" ? 32 : 128}`;
  if (v.verdict === "dnat")
    return `this ruleset would lock you out: a new SSH connection ${who} would be captured by ${v.by}. Fix: move that forward's external_port, or run --force if you have another way in`;
  return `this ruleset would lock you out: a new SSH connection ${who} would be dropped by ${v.by}. Fix: add to network.input_allow { name: admin-ssh, protocol: tcp, ports: [${conn.serverPort}], sources: [${src}] }, or run --force if you have another way in`;
}
