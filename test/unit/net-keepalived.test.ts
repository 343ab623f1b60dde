/**
 * keepalived rendering (keepalived.conf(5)) and its refusals: nopreempt by default, unicast peers,
 * the sync group, notify hooks, advert_int and auth_pass keepalived would silently change, the
 * include check of the operator's main config, and the notify-script ownership check.
 */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  createExecaRunner,
  type FileFacts,
  includesFile,
  KeepalivedConfigError,
  keepalivedHostRefusals,
  notifyScriptProblem,
  renderKeepalived,
} from "../../src/net/index.ts";
import { networkIssues, networkOf } from "../helpers/network-policy.ts";

const net = (text: string) => networkOf(text);
const issues = (text: string) => networkIssues(text);
const VIP = "{ instance: VI_PUB, interface: eth0, virtual_router_id: 51, addresses: [203.0.113.100/24]";
const inputs = { authPass: {}, healthCommand: "/usr/bin/node /opt/varco/bin/varco-health.mjs 127.0.0.1:9108" };
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("keepalived rendering", () => {
  it("renders nopreempt with state BACKUP by default, and no nopreempt with nopreempt: false", () => {
    const conf = renderKeepalived(net(`  vips: [ ${VIP} } ]\n`), inputs);
    expect(conf).toContain("\tstate BACKUP\n\tnopreempt\n\tversion 2\n");
    const pre = renderKeepalived(net(`  vips: [ ${VIP}, nopreempt: false, state: MASTER } ]\n`), inputs);
    expect(pre).toContain("\tstate MASTER\n\tversion 2\n");
    expect(pre).not.toContain("nopreempt");
  });

  it("refuses state MASTER with nopreempt (keepalived ignores nopreempt then), with the fix", () => {
    const found = issues(`  vips: [ ${VIP}, state: MASTER } ]\n`);
    expect(found.join("\n")).toMatch(/state MASTER with nopreempt.*remove state.*or set nopreempt: false/);
  });

  it("renders unicast_src_ip and unicast_peer, refusing a peer of the other family or equal to the source", () => {
    const conf = renderKeepalived(
      net(`  vips: [ ${VIP}, unicast_src_ip: 203.0.113.10, unicast_peers: [203.0.113.11, 203.0.113.12] } ]\n`),
      inputs,
    );
    expect(conf).toContain("\tunicast_src_ip 203.0.113.10\n\tunicast_peer {\n\t\t203.0.113.11\n\t\t203.0.113.12\n\t}");
    expect(issues(`  vips: [ ${VIP}, unicast_src_ip: 203.0.113.10, unicast_peers: [203.0.113.10, "2001:db8::2"] } ]\n`).join("\n")).toMatch(
      /203\.0\.113\.10 is this node's unicast_src_ip[\s\S]*2001:db8::2 is not of the VIP's address family/,
    );
    expect(issues(`  vips: [ ${VIP}, unicast_src_ip: 203.0.113.10 } ]\n`).join("\n")).toMatch(/unicast_src_ip without unicast_peers/);
  });

  it("groups several VIPs in one vrrp_sync_group (default), not one VIP, and not when sync_group: false", () => {
    const two = `  vips:
    - ${VIP} }
    - { instance: VI_LAN, interface: eth1, virtual_router_id: 52, addresses: [10.10.0.1/24] }
`;
    expect(renderKeepalived(net(two), inputs)).toContain("vrrp_sync_group varco {\n\tgroup {\n\t\tVI_PUB\n\t\tVI_LAN\n\t}\n}");
    expect(renderKeepalived(net(`  vips: [ ${VIP} } ]\n`), inputs)).not.toContain("vrrp_sync_group");
    expect(renderKeepalived(net(`${two}  keepalived: { sync_group: false }\n`), inputs)).not.toContain("vrrp_sync_group");
    expect(issues(`  vips: [ ${VIP} } ]\n  keepalived: { sync_group: true }\n`).join("\n")).toMatch(/needs at least two VIPs/);
  });

  it("renders notify hooks per transition next to the logger notify, and refuses relative or spaced paths", () => {
    const conf = renderKeepalived(
      net(`  vips: [ ${VIP}, notify: { master: /usr/local/sbin/failover-api, fault: /usr/local/sbin/fault } } ]\n`),
      inputs,
    );
    expect(conf).toContain(
      '\tnotify_master "/usr/local/sbin/failover-api"\n\tnotify_fault "/usr/local/sbin/fault"\n\tnotify "/usr/bin/logger',
    );
    // Scripts need script_user and enable_script_security or keepalived --config-test fails (exit 5/6).
    expect(conf).toContain("global_defs {\n\tscript_user root\n\tenable_script_security\n}");
    expect(issues(`  vips: [ ${VIP}, notify: { master: failover.sh } } ]\n`).join("\n")).toMatch(/absolute path/);
    expect(issues(`  vips: [ ${VIP}, notify: { master: "/usr/bin/curl -X POST" } } ]\n`).join("\n")).toMatch(/no spaces/);
  });

  it("renders the liveness track script with weight 0 (FAULT while failing)", () => {
    const conf = renderKeepalived(net(`  vips: [ ${VIP}, track_gateway_health: true } ]\n`), inputs);
    expect(conf).toContain(`vrrp_script varco_live {\n\tscript "${inputs.healthCommand}"`);
    expect(conf).toMatch(/vrrp_script varco_live \{[^}]*\tweight 0\n/);
    expect(conf).toContain("\ttrack_script {\n\t\tvarco_live\n\t}");
  });

  it("refuses an advert_interval keepalived would round (VRRPv2 whole seconds; VRRPv3 10 ms steps up to 40.95 s)", () => {
    expect(issues(`  vips: [ ${VIP}, advert_interval: 1500ms } ]\n`).join("\n")).toMatch(
      /1500 ms cannot be expressed in VRRPv2.*vrrp_version: 3/,
    );
    expect(issues(`  vips: [ ${VIP}, advert_interval: 500ms } ]\n`).join("\n")).toMatch(/VRRPv2/);
    expect(issues(`  vips: [ ${VIP}, advert_interval: 256s } ]\n`).join("\n")).toMatch(/VRRPv2/);
    const v3 = (adv: string) => `  vips: [ ${VIP}, advert_interval: ${adv} } ]\n  keepalived: { vrrp_version: 3 }\n`;
    expect(issues(v3("500ms"))).toEqual([]);
    expect(renderKeepalived(net(v3("500ms")), inputs)).toContain("\tversion 3\n");
    expect(renderKeepalived(net(v3("500ms")), inputs)).toContain("\tadvert_int 0.5\n");
    expect(issues(v3("15ms")).join("\n")).toMatch(/10 ms steps/);
    expect(issues(v3("41s")).join("\n")).toMatch(/10 ms steps from 10ms to 40950ms/);
    expect(issues(`  vips: [ ${VIP}, auth_pass_file: x } ]\n  keepalived: { vrrp_version: 3 }\n`).join("\n")).toMatch(
      /VRRPv3 has no authentication/,
    );
    // The renderer refuses too (a policy built without the checks).
    const n = net(`  vips: [ ${VIP} } ]\n`);
    const bad = { ...n, vips: [{ ...(n.vips[0] as (typeof n.vips)[number]), advert_interval: 1500 }] };
    expect(() => renderKeepalived(bad, inputs)).toThrow(KeepalivedConfigError);
  });

  it("refuses an auth_pass longer than 8 characters instead of cutting it, naming the key", () => {
    const n = net(`  vips: [ ${VIP}, auth_pass_file: x } ]\n`);
    expect(renderKeepalived(n, { ...inputs, authPass: { VI_PUB: "12345678" } })).toContain("\t\tauth_pass 12345678\n");
    expect(() => renderKeepalived(n, { ...inputs, authPass: { VI_PUB: "123456789" } })).toThrow(
      /network\.vips\[0\]\.auth_pass_file: the password is 9 characters, keepalived uses at most 8/,
    );
  });
});

describe("keepalived on the host (plan time)", () => {
  it("checks that the operator's main config includes varco's file (globs, relative paths, comments)", () => {
    const f = "/etc/keepalived/conf.d/varco.conf";
    expect(includesFile("include /etc/keepalived/conf.d/*.conf\n", "/etc/keepalived/keepalived.conf", f)).toBe(true);
    expect(includesFile("include conf.d/varco.conf\n", "/etc/keepalived/keepalived.conf", f)).toBe(true);
    expect(includesFile("# include conf.d/varco.conf\n", "/etc/keepalived/keepalived.conf", f)).toBe(false);
    expect(includesFile("include /etc/keepalived/other/*.conf\n", "/etc/keepalived/keepalived.conf", f)).toBe(false);
  });

  it("refuses a missing main config or one without the include, giving the line to add", async () => {
    const d = mkdtempSync(join(tmpdir(), "varco-ka-"));
    dirs.push(d);
    const n = net(`  vips: [ ${VIP} } ]\n  keepalived: { config_file: ${d}/conf.d/varco.conf, main_config: ${d}/keepalived.conf }\n`);
    const r = createExecaRunner();
    expect((await keepalivedHostRefusals(n, r.readFile)).join("\n")).toMatch(
      new RegExp(`${d}/keepalived.conf does not exist[\\s\\S]*include ${d}/conf.d/varco.conf`),
    );
    writeFileSync(join(d, "keepalived.conf"), "global_defs {\n\trouter_id lb1\n}\nvirtual_server 203.0.113.100 443 {\n}\n");
    expect((await keepalivedHostRefusals(n, r.readFile)).join("\n")).toMatch(/does not include varco's file.*add the line\n {4}include /);
    writeFileSync(join(d, "keepalived.conf"), "global_defs {\n\trouter_id lb1\n}\ninclude conf.d/*.conf\n");
    expect(await keepalivedHostRefusals(n, r.readFile)).toEqual([]);
    expect(await keepalivedHostRefusals(net(""), r.readFile)).toEqual([]);
  });

  it("refuses a notify script keepalived would not run as root: missing, not executable, owned or writable by others", async () => {
    const d = mkdtempSync(join(tmpdir(), "varco-ka-"));
    dirs.push(d);
    mkdirSync(join(d, "sbin"), { mode: 0o755 });
    chmodSync(d, 0o755);
    const script = join(d, "sbin/failover");
    // Facts of the real files, with the folders above the temp folder (/tmp is world-writable) seen as root-owned 0755.
    const { lstat } = await import("node:fs/promises");
    const read = async (p: string): Promise<FileFacts | undefined> => {
      if (!p.startsWith(d)) return { uid: 0, mode: 0o40755, isFile: false, isSymlink: false };
      try {
        const s = await lstat(p);
        return { uid: s.uid, mode: s.mode, isFile: s.isFile(), isSymlink: false };
      } catch {
        return undefined;
      }
    };
    expect(await notifyScriptProblem("k", script, read)).toMatch(/does not exist/);
    writeFileSync(script, "#!/bin/sh\n", { mode: 0o644 });
    chmodSync(script, 0o644);
    expect(await notifyScriptProblem("k", script, read)).toMatch(/not executable: chmod 0755/);
    chmodSync(script, 0o777);
    expect(await notifyScriptProblem("k", script, read)).toMatch(/must be owned by root and not writable by group or others/);
    chmodSync(script, 0o755);
    if (process.getuid?.() === 0) {
      expect(await notifyScriptProblem("k", script, read)).toBeUndefined();
      chownSync(script, 65534, 65534);
      expect(await notifyScriptProblem("k", script, read)).toMatch(/chown root:root/);
      chownSync(script, 0, 0);
      chmodSync(join(d, "sbin"), 0o777);
      expect(await notifyScriptProblem("k", script, read)).toMatch(/the folder .*sbin above .* is writable by a non-root user/);
      chmodSync(join(d, "sbin"), 0o755);
      // The real check (no injected facts) sees /tmp, which others may write: refused.
      expect(await notifyScriptProblem("k", script)).toMatch(/the folder \/tmp/);
    }
    const n = net(`  vips: [ ${VIP}, notify: { backup: ${script}, stop: ${d}/nope } } ]\n  keepalived: { main_config: ${d}/k.conf }\n`);
    writeFileSync(join(d, "k.conf"), "include /etc/keepalived/conf.d/varco.conf\n");
    const found = await keepalivedHostRefusals(n, createExecaRunner().readFile, read);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(/network\.vips\[0\]\.notify\.stop: .*nope does not exist/);
  });
});
