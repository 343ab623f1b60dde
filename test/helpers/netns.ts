/**
 * Network namespaces for tests: created here, deleted in `destroy()`. Only namespaces and veth
 * pairs this helper made are touched; the host's own namespace is never changed.
 */
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { ROOT } from "./harness.ts";

const PROBE = join(ROOT, "test/helpers/netprobe.mjs");

export interface Netns {
  /** Namespace name for a role, e.g. ns("gw"). */
  ns(role: string): string;
  ip(role: string, ...args: string[]): Promise<string>;
  exec(role: string, argv: readonly string[]): Promise<{ stdout: string; stderr: string; exitCode: number }>;
  /** Starts probe servers in a namespace; resolves once they listen. */
  serve(role: string, name: string, ports: readonly number[]): Promise<void>;
  /** Connects from a namespace; returns the answer, "TIMEOUT" or "ERROR:…". */
  probe(role: string, host: string, port: number, ms?: number): Promise<string>;
  /** Starts a long-running process in a namespace, stopped in destroy(). */
  spawn(role: string, argv: readonly string[]): ResultPromise;
  destroy(): Promise<void>;
}

export async function createNetns(roles: readonly string[]): Promise<Netns> {
  const id = randomBytes(3).toString("hex");
  const names = new Map(roles.map((r) => [r, `varco-${r}-${id}`]));
  const children: ResultPromise[] = [];
  const ns = (role: string) => {
    const n = names.get(role);
    if (!n) throw new Error(`unknown role ${role}`);
    return n;
  };
  for (const n of names.values()) await execa("ip", ["netns", "add", n]);
  for (const n of names.values()) await execa("ip", ["-n", n, "link", "set", "lo", "up"]);
  const exec = async (role: string, argv: readonly string[]) => {
    const r = await execa("ip", ["netns", "exec", ns(role), ...argv], { reject: false });
    return { stdout: String(r.stdout), stderr: String(r.stderr), exitCode: r.exitCode ?? -1 };
  };
  return {
    ns,
    async ip(role, ...args) {
      const r = await execa("ip", ["-n", ns(role), ...args]);
      return String(r.stdout);
    },
    exec,
    async serve(role, name, ports) {
      const child = execa("ip", ["netns", "exec", ns(role), "node", PROBE, "serve", name, ...ports.map(String)], { reject: false });
      children.push(child);
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error("probe server did not start")), 10_000);
        child.stdout?.on("data", (d: Buffer) => {
          if (d.toString().includes("READY")) {
            clearTimeout(t);
            resolve();
          }
        });
      });
    },
    async probe(role, host, port, ms = 1500) {
      const r = await exec(role, ["node", PROBE, "connect", host, String(port), String(ms)]);
      return r.stdout.trim();
    },
    spawn(role, argv) {
      const child = execa("ip", ["netns", "exec", ns(role), ...argv], { reject: false });
      children.push(child);
      return child;
    },
    async destroy() {
      for (const c of children) {
        c.kill("SIGTERM");
        const t = setTimeout(() => c.kill("SIGKILL"), 3000);
        await c.catch(() => undefined);
        clearTimeout(t);
      }
      for (const n of names.values()) await execa("ip", ["netns", "del", n], { reject: false });
    },
  };
}

/** A veth pair between two namespaces, created inside the first one (never in the host namespace). */
export async function veth(n: Netns, a: { role: string; ifname: string }, b: { role: string; ifname: string }): Promise<void> {
  await execa("ip", ["-n", n.ns(a.role), "link", "add", a.ifname, "type", "veth", "peer", "name", b.ifname, "netns", n.ns(b.role)]);
  await n.ip(a.role, "link", "set", a.ifname, "up");
  await n.ip(b.role, "link", "set", b.ifname, "up");
}

/** Whether `cidr` is on `dev` in a namespace role. */
export async function hasAddress(n: Netns, role: string, dev: string, cidr: string): Promise<boolean> {
  return (await n.ip(role, "-br", "addr", "show", "dev", dev)).includes(cidr);
}

/** Polls `fn` every 100 ms until true; resolves with the ms it took. Bounded by `ms`. */
export async function waitFor(fn: () => Promise<boolean>, ms: number, what: string): Promise<number> {
  const t0 = Date.now();
  for (let i = 0; i < ms / 100; i++) {
    if (await fn()) return Date.now() - t0;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/** Starts keepalived in the foreground in a namespace role, with its files in `dir` (keepalived(8)). */
export function spawnKeepalived(n: Netns, role: string, dir: string): ResultPromise {
  return n.spawn(role, [
    "keepalived",
    "-n",
    "-l",
    "-D",
    "--no-syslog",
    "-f",
    join(dir, "keepalived.conf"),
    "-p",
    join(dir, "keepalived.pid"),
    "-r",
    join(dir, "vrrp.pid"),
  ]);
}
