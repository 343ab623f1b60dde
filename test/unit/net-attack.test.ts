/**
 * Attacks on the network front-end that need no packets: policy text that would inject into the
 * rendered nft script, keepalived.conf or ifupdown2 stanzas; a generation planted in the state
 * folder for the root-run boot restore; a bridge port or public interface spelled as an altname.
 * Each case failed before its fix.
 */
import { chownSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { restoreCurrent } from "../../src/net/boot.ts";
import { bridgeRefusals, publicInterfaceRefusals } from "../../src/net/guard.ts";
import type { LiveLink } from "../../src/net/live.ts";
import { renderNft } from "../../src/net/nft.ts";
import { createRecordingRunner } from "../../src/net/runner.ts";
import { formatIssue, type PolicyError, parsePolicyText } from "../../src/policy/index.ts";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz";
const text = (network: string, pub = "eth0") => `version: 1
gateway: { listen: ["0.0.0.0:22"] }
directory: { ldap: { url: "ldap://x", bind_dn: cn=a, bind_password_file: p, user_base: ou=p } }
targets: { t: { host: 10.0.0.1, host_key: "${KEY}" } }
routes: [ { users: [u], alias: t, target: t } ]
network:
  public_interface: ${JSON.stringify(pub)}
  public_ip: 203.0.113.11
  private_networks: [10.10.0.0/16, "2001:db8:10::/48"]
${network}`;
const issues = (network: string, pub?: string) => {
  try {
    parsePolicyText(text(network, pub), "/p.yaml");
    return "";
  } catch (err) {
    return (err as PolicyError).issues.map(formatIssue).join("\n");
  }
};
const net = (network: string) => {
  const n = parsePolicyText(text(network), "/p.yaml").policy.network;
  if (!n) throw new Error("no network");
  return n;
};

describe("policy text cannot inject into the renderings", () => {
  it("refuses a VIP interface that would add lines to keepalived.conf (notify_master as root)", () => {
    const evil = JSON.stringify("eth0\n\tnotify_master /bin/sh");
    expect(issues(`  vips: [ { instance: V, interface: ${evil}, virtual_router_id: 51, addresses: [203.0.113.10/24] } ]`)).toMatch(
      /an interface name/,
    );
  });
  it("refuses a public_interface or bridge port that is not an interface name", () => {
    expect(issues("", 'eth0"; accept; #')).toMatch(/an interface name/);
    // ports are written into the ifupdown2 stanza of `net render interfaces` (post-up runs as root)
    expect(issues(`  bridges: [ { name: vmbr1, ports: [${JSON.stringify("eno2\n    post-up /bin/sh")}] } ]`)).toMatch(/an interface name/);
  });
  it("refuses keepalived paths and the health command with newlines or quotes", () => {
    expect(issues(`  keepalived: { main_config: ${JSON.stringify("/etc/k.conf\nvrrp_script x {")} }`)).toMatch(/one line/);
    expect(issues(`  keepalived: { health_command: ${JSON.stringify('/bin/true" \n notify "/bin/sh')} }`)).toMatch(/one line/);
  });
});

describe("altnames (ip-link(8) property add altname)", () => {
  const links = new Map<string, LiveLink>([
    ["eth0", { ifname: "eth0", altnames: ["wan0"], addr_info: [{ local: "203.0.113.11", prefixlen: 24 }] }],
    ["eno2", { ifname: "eno2" }],
  ]);
  it("refuses a bridge port that is the public interface under its altname", () => {
    // `ip link set wan0 master vmbr1` enslaves eth0: checked for real in a namespace.
    expect(bridgeRefusals(net("  bridges: [ { name: vmbr1, ports: [wan0] } ]"), links).join("\n")).toMatch(/public interface/);
    expect(bridgeRefusals(net("  bridges: [ { name: vmbr1, ports: [eno2] } ]"), links)).toEqual([]);
  });
  it("refuses public_interface written as an altname (nft iifname never matches it)", () => {
    const n = { ...net(""), public_interface: "wan0" };
    expect(publicInterfaceRefusals(n, links).join("\n")).toMatch(/wan0 is an altname of eth0.*public_interface: eth0/);
    expect(publicInterfaceRefusals(net(""), links)).toEqual([]);
  });
});

describe("rendering", () => {
  it("drops private sources arriving on the public interface before forward_allow and forwards", () => {
    const nft = renderNft(
      net(
        "  forward_allow: [ { name: db, from: [10.10.2.12], to: [10.10.1.11], ports: [5432] } ]\n  port_forwards: [ { name: w, external_port: 80, internal_ip: 10.10.1.11 } ]",
      ),
    );
    const spoof = nft.indexOf('iifname "eth0" ip saddr @private4 counter drop');
    expect(spoof).toBeGreaterThan(0);
    expect(nft.indexOf('iifname "eth0" ip6 saddr @private6 counter drop')).toBeGreaterThan(0);
    expect(spoof).toBeLessThan(nft.indexOf("@east_west4 accept"));
    expect(nft).toContain("ct status dnat ct original ip daddr { 203.0.113.11 } accept");
    expect(spoof).toBeLessThan(nft.indexOf("ct status dnat ct original ip daddr"));
  });
  it("meters IPv6 SSH sources per /64 and lets input_allow sources past the meter", () => {
    const nft = renderNft(net("  input_allow: [ { name: office, ports: [22], sources: [198.51.100.7/32] } ]"), {
      listen: [{ host: "0.0.0.0", port: 22 }],
    });
    expect(nft).toContain("update @ssh_meter6 { ip6 saddr & ffff:ffff:ffff:ffff:: limit rate over");
    expect(nft.indexOf('comment "input_allow office"')).toBeLessThan(nft.indexOf("update @ssh_meter4"));
  });
});

describe.runIf(process.getuid?.() === 0)("boot restore with a planted generation", () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  it("refuses generations the gateway's user could have written (it owns the state folder)", async () => {
    dir = mkdtempSync(join(tmpdir(), "varco-attack-"));
    const net = join(dir, "net");
    mkdirSync(net, { mode: 0o700 });
    const pwned = join(dir, "keepalived-pwned.conf");
    const gen = {
      id: 1,
      appliedAt: new Date().toISOString(),
      desired: {
        table: "varco",
        nft: "table inet varco\n",
        keepalived: 'global_defs {}\nvrrp_instance X { notify_master "/bin/sh -c id" }\n',
      },
      listing: "",
      linkUndo: [],
      ownedLinks: [],
      keepalivedFile: pwned,
    };
    writeFileSync(join(net, "gen-1.json"), JSON.stringify(gen), { mode: 0o600 });
    writeFileSync(join(net, "current"), "1\n", { mode: 0o600 });
    // What the gateway (user varco, owner of state_dir) can do: rename net/ away, plant its own.
    renameSync(net, join(dir, "net.planted"));
    renameSync(join(dir, "net.planted"), net);
    for (const f of ["", "gen-1.json", "current"]) chownSync(join(net, f), 65534, 65534);
    const r = createRecordingRunner();
    await expect(restoreCurrent(r, net)).rejects.toThrow(/owned by uid 65534.*not trusted/);
    expect(r.commands).toEqual([]);
    expect(r.files.has(pwned)).toBe(false);
    // Owned by root again: restored as before.
    for (const f of ["", "gen-1.json", "current"]) chownSync(join(net, f), 0, 0);
    await expect(restoreCurrent(r, net)).resolves.toMatchObject({ generation: 1, keepalivedWritten: true });
  });
});
