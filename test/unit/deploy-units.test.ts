/**
 * The systemd units in deploy/: `systemd-analyze verify` (systemd-analyze(1): loads each unit, checks
 * keys and executables, and builds a start transaction, so ordering cycles with the real
 * keepalived/nftables units of this host fail it) plus the ordering read from the unit files
 * (systemd.syntax(7)): the boot restore runs before keepalived and before the network comes up,
 * after nftables.service; the path-triggered apply has a confirm window.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, describe, expect, it } from "vitest";
import { parseDurationMs } from "../../src/policy/index.ts";
import { ROOT } from "../helpers/harness.ts";
import { serveNodeOptions } from "../helpers/unit.ts";

const DEPLOY = join(ROOT, "deploy");
const UNITS = ["varco.service", "varco-net.service", "varco-net.path", "varco-net-restore.service"];
const hasAnalyze = existsSync("/usr/bin/systemd-analyze");
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A unit file as section → key → values (repeated keys append, list values split on spaces; systemd.syntax(7)). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const out = new Map<string, Map<string, string[]>>();
  let section: Map<string, string[]> | undefined;
  for (const raw of text.replace(/\\\n/g, " ").split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = new Map();
      out.set(s[1] as string, section);
      continue;
    }
    const eq = line.indexOf("=");
    if (!section || eq < 0) throw new Error(`not a unit file line: ${line}`);
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    section.set(key, [...(section.get(key) ?? []), value]);
  }
  return out;
}
const unit = (name: string) => parseUnit(readFileSync(join(DEPLOY, name), "utf8"));
const list = (u: Map<string, Map<string, string[]>>, section: string, key: string) =>
  (u.get(section)?.get(key) ?? []).flatMap((v) => v.split(/\s+/)).filter(Boolean);

const verify = (files: string[]) => execa("systemd-analyze", ["verify", "--man=no", ...files], { reject: false });

describe.runIf(hasAnalyze)("deploy/ systemd units", () => {
  it("pass systemd-analyze verify with no warning, together with this host's keepalived and nftables units", async () => {
    const extra = ["/lib/systemd/system/keepalived.service", "/lib/systemd/system/nftables.service"].filter(existsSync);
    const r = await verify([...UNITS.map((u) => join(DEPLOY, u)), ...extra]);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
  });

  it("verify catches what a mistaken edit would do: a misspelt key, and an ordering cycle with the network", async () => {
    const d = mkdtempSync(join(tmpdir(), "varco-units-"));
    dirs.push(d);
    const text = readFileSync(join(DEPLOY, "varco-net-restore.service"), "utf8");
    writeFileSync(join(d, "varco-net-restore.service"), text.replace("Before=network-pre.target", "Befor=network-pre.target"));
    expect((await verify([join(d, "varco-net-restore.service")])).stderr).toMatch(/Unknown key 'Befor'/);
    // Waiting for keepalived while being ordered before it: a cycle systemd cannot break.
    writeFileSync(
      join(d, "varco-net-restore.service"),
      text
        .replace("After=nftables.service", "After=nftables.service keepalived.service")
        .replace("Wants=network-pre.target", "Wants=network-pre.target keepalived.service"),
    );
    const cyc = await verify([join(d, "varco-net-restore.service")]);
    // systemd breaks the cycle by dropping a job (exit 0) but says so: the first test requires an empty stderr.
    expect(cyc.stderr).toMatch(/ordering cycle/i);
  });

  it("order the boot restore before keepalived and the network, after nftables.service, and install it", () => {
    const u = unit("varco-net-restore.service");
    expect(list(u, "Unit", "Before")).toEqual(expect.arrayContaining(["keepalived.service", "network-pre.target"]));
    expect(list(u, "Unit", "Wants")).toContain("network-pre.target");
    expect(list(u, "Unit", "After")).toContain("nftables.service");
    expect(list(u, "Unit", "After")).not.toContain("network-online.target");
    expect(u.get("Unit")?.get("DefaultDependencies")).toEqual(["no"]);
    expect(u.get("Service")?.get("Type")).toEqual(["oneshot"]);
    expect(u.get("Service")?.get("RemainAfterExit")).toEqual(["yes"]);
    expect(u.get("Service")?.get("ExecStart")?.[0]).toMatch(/ net restore$/);
    expect(list(u, "Install", "WantedBy")).toEqual(expect.arrayContaining(["multi-user.target", "keepalived.service"]));
    // keepalived itself starts after network-online.target (this host's unit), so the chain holds twice.
    if (existsSync("/lib/systemd/system/keepalived.service")) {
      const k = parseUnit(readFileSync("/lib/systemd/system/keepalived.service", "utf8"));
      expect(list(k, "Unit", "After")).toContain("network-online.target");
    }
  });

  it("apply from the path unit with a confirm window whose watcher survives the oneshot", () => {
    const u = unit("varco-net.service");
    const exec = u.get("Service")?.get("ExecStart")?.[0] ?? "";
    const m = / net apply --confirm (\S+)$/.exec(exec);
    expect(m).not.toBeNull();
    expect(parseDurationMs(m?.[1] ?? "")).toBeGreaterThanOrEqual(60_000);
    expect(u.get("Service")?.get("KillMode")).toEqual(["process"]);
    expect(list(u, "Install", "Also")).toEqual(["varco-net.path"]);
    const p = unit("varco-net.path");
    expect(p.get("Path")?.get("Unit")).toEqual(["varco-net.service"]);
    expect(existsSync(join(DEPLOY, "varco-net.service"))).toBe(true);
  });

  it("install.sh is valid bash and installs and enables the restore unit", async () => {
    expect((await execa("bash", ["-n", join(DEPLOY, "install.sh")], { reject: false })).exitCode).toBe(0);
    const sh = readFileSync(join(DEPLOY, "install.sh"), "utf8");
    expect(sh).toMatch(/install -m 0644 (?:[^\n]*\\\n)*[^\n]*varco-net-restore\.service[^\n]* \/etc\/systemd\/system\//);
    expect(sh).toMatch(/systemctl enable varco-net-restore\.service/);
  });

  it("keep restarting the gateway whatever the count (a start refused while PostgreSQL is down succeeds once it is back)", () => {
    const u = unit("varco.service");
    expect(list(u, "Unit", "StartLimitIntervalSec")).toEqual(["0"]);
    expect(list(u, "Service", "Restart")).toEqual(["on-failure"]);
    expect(list(u, "Service", "RestartSec")).toEqual(["5s"]);
  });

  it("the gateway's node options are ones this node accepts (a mistyped V8 flag would stop the service at start)", async () => {
    const options = serveNodeOptions();
    expect(options).toContain("--single-threaded-gc");
    const r = await execa("node", [...options, "-e", "0"], { reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    // The parser finds the options: a bad one in a copy of the unit makes node refuse to start.
    const d = mkdtempSync(join(tmpdir(), "varco-unit-"));
    dirs.push(d);
    const bad = join(d, "varco.service");
    writeFileSync(bad, readFileSync(join(DEPLOY, "varco.service"), "utf8").replaceAll("--single-threaded-gc", "--single-threaded-gcc"));
    expect((await execa("node", [...serveNodeOptions(bad), "-e", "0"], { reject: false })).exitCode).not.toBe(0);
  });
});
