/**
 * authorizeChannel: one decision per request type against `route.allow`, and the bypasses an
 * attacker would try (a transfer prefix in front of a shell, odd subsystem names, x11 "allowed").
 * Also checks what createChannelAudit records for each classification (fake sink, temp folder).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createChannelAudit } from "../../src/audit/index.ts";
import type { AuditSink } from "../../src/audit/store.ts";
import { type PolicyRoute, parsePolicyText } from "../../src/policy/index.ts";
import { authorizeChannel, type ChannelRequest, parseCommand } from "../../src/routing/index.ts";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz";
const { policy } = parsePolicyText(
  `version: 1
gateway: {}
directory: { ldap: { url: "ldap://x", bind_dn: cn=a, bind_password_file: p, user_base: ou=p } }
targets:
  vm1: { host: 10.0.0.1, host_key: "${KEY}" }
routes:
  - { users: [u], alias: scponly, target: vm1, allow: { shell: false, exec: false, sftp: false, scp: true } }
  - { users: [u], alias: sftponly, target: vm1, allow: { shell: false, exec: false, sftp: true, scp: false } }
  - { users: [u], alias: execonly, target: vm1, allow: { shell: false, exec: true, sftp: false, scp: false } }
  - { users: [u], alias: all, target: vm1, allow: { port_forwarding: true, agent_forwarding: true, x11: true } }
  - { users: [u], alias: none, target: vm1, allow: { shell: false, exec: false, sftp: false, scp: false } }
`,
  "/p.yaml",
);
const route = (alias: string): PolicyRoute => {
  const r = policy.routes.find((x) => x.alias === alias);
  if (!r) throw new Error(alias);
  return r;
};
const exec = (command: string): ChannelRequest => ({ type: "exec", command });

describe("exec on a route with scp only", () => {
  const r = route("scponly");
  it("allows the scp lines real clients send", () => {
    for (const c of ["scp -f /etc/hostname", "scp -t x", "scp -r -p -t dir/"]) {
      expect(authorizeChannel(r, exec(c))).toMatchObject({ allow: true, permission: "scp", command: { kind: "scp" } });
    }
  });
  it("refuses anything that only starts like scp, as exec", () => {
    for (const c of ["scp -f x; bash -i", "scp -t x && sh", "scp -t x | sh", "scp -t $(id)", "scp -t `id`", "scp -t x\nbash", "scp -f *"]) {
      const d = authorizeChannel(r, exec(c));
      expect(d).toMatchObject({ allow: false, permission: "exec", what: "exec", reason: "exec is not allowed", command: { kind: "exec" } });
    }
  });
  it("refuses rsync, git and the sftp-server binary (they need exec / sftp)", () => {
    expect(authorizeChannel(r, exec("rsync --server -e.L . x"))).toMatchObject({ allow: false, permission: "exec" });
    expect(authorizeChannel(r, exec("git-upload-pack 'r'"))).toMatchObject({ allow: false, permission: "exec" });
    expect(authorizeChannel(r, exec("/usr/lib/openssh/sftp-server"))).toMatchObject({ allow: false, permission: "sftp" });
    expect(authorizeChannel(r, { type: "shell" })).toMatchObject({ allow: false, permission: "shell", reason: "shell is not allowed" });
    expect(authorizeChannel(r, { type: "subsystem", name: "sftp" })).toMatchObject({ allow: false, permission: "sftp" });
  });
});

describe("sftp only", () => {
  const r = route("sftponly");
  it("allows the sftp subsystem and the sftp-server binary run as a command, nothing else", () => {
    expect(authorizeChannel(r, { type: "subsystem", name: "sftp" })).toEqual({ allow: true, permission: "sftp" });
    expect(authorizeChannel(r, exec("/usr/lib/openssh/sftp-server"))).toMatchObject({
      allow: true,
      permission: "sftp",
      command: { kind: "sftp" },
    });
    expect(authorizeChannel(r, exec("/usr/lib/openssh/sftp-server; sh"))).toMatchObject({ allow: false, permission: "exec" });
    expect(authorizeChannel(r, exec("/usr/lib/openssh/sftp-server -d /"))).toMatchObject({ allow: false, permission: "exec" });
    expect(authorizeChannel(r, exec("internal-sftp"))).toMatchObject({ allow: false, permission: "exec" });
    expect(authorizeChannel(r, exec("scp -t x"))).toMatchObject({ allow: false, permission: "scp" });
  });
  it("refuses other subsystems with a sanitised name", () => {
    const d = authorizeChannel(r, { type: "subsystem", name: "netconf\r\n\u001b[2Jx" });
    expect(d).toMatchObject({ allow: false, permission: undefined, what: "subsystem netconf???[2Jx" });
    expect(d.allow === false && d.reason).toBe("subsystem netconf???[2Jx is not allowed");
    expect(authorizeChannel(r, { type: "subsystem", name: "SFTP" })).toMatchObject({ allow: false });
    expect(authorizeChannel(r, { type: "subsystem", name: "sftp " })).toMatchObject({ allow: false });
  });
});

describe("exec only", () => {
  const r = route("execonly");
  it("allows commands, rsync and git, but not scp or sftp-server", () => {
    expect(authorizeChannel(r, exec("uptime"))).toMatchObject({
      allow: true,
      permission: "exec",
      command: { kind: "exec", argv: ["uptime"] },
    });
    expect(authorizeChannel(r, exec("scp -f x; id"))).toMatchObject({ allow: true, permission: "exec", command: { kind: "exec" } });
    expect(authorizeChannel(r, exec("rsync --server --sender -e.L . x"))).toMatchObject({ allow: true, command: { kind: "rsync" } });
    expect(authorizeChannel(r, exec("git-receive-pack 'r'"))).toMatchObject({ allow: true, command: { kind: "git" } });
    expect(authorizeChannel(r, exec("scp -f x"))).toMatchObject({ allow: false, permission: "scp" });
    expect(authorizeChannel(r, exec("/usr/lib/openssh/sftp-server"))).toMatchObject({ allow: false, permission: "sftp" });
  });
});

describe("forwarding requests", () => {
  it("follow port_forwarding and agent_forwarding; x11 is refused even when allowed", () => {
    const all = route("all");
    const none = route("none");
    const reqs: ChannelRequest[] = [
      { type: "direct-tcpip", host: "10.0.0.9", port: 443 },
      { type: "tcpip-forward", bindAddr: "127.0.0.1", bindPort: 0 },
      { type: "cancel-tcpip-forward", bindAddr: "127.0.0.1", bindPort: 8080 },
    ];
    for (const q of reqs) {
      expect(authorizeChannel(all, q)).toEqual({ allow: true, permission: "port_forwarding" });
      expect(authorizeChannel(none, q)).toMatchObject({ allow: false, reason: "port_forwarding is not allowed" });
    }
    expect(authorizeChannel(all, { type: "auth-agent" })).toEqual({ allow: true, permission: "agent_forwarding" });
    expect(authorizeChannel(none, { type: "auth-agent" })).toMatchObject({ allow: false, permission: "agent_forwarding" });
    expect(authorizeChannel(all, { type: "x11" })).toMatchObject({
      allow: false,
      permission: "x11",
      reason: expect.stringContaining("not supported"),
    });
    expect(authorizeChannel(all, { type: "unsupported", name: "streamlocal-forward@openssh.com" })).toMatchObject({ allow: false });
  });
  it("refuses malformed ports", () => {
    const all = route("all");
    for (const port of [0, -1, 65536, 1.5, Number.NaN])
      expect(authorizeChannel(all, { type: "direct-tcpip", host: "h", port })).toMatchObject({ allow: false });
    expect(authorizeChannel(all, { type: "direct-tcpip", host: "", port: 22 })).toMatchObject({ allow: false });
    expect(authorizeChannel(all, { type: "tcpip-forward", bindAddr: "", bindPort: 70000 })).toMatchObject({ allow: false });
  });
});

describe("what createChannelAudit records", () => {
  const dir = mkdtempSync(join(tmpdir(), "varco-chaudit-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  let channel = 0;
  const open = async (kind: "exec" | "subsystem", arg: string) => {
    const started: string[] = [];
    const sink = {
      recordingStarted: (_s: string, _c: number, p: string) => started.push(p),
      append: () => undefined,
      recordingClosed: () => undefined,
    } as unknown as AuditSink;
    const a = createChannelAudit({
      audit: sink,
      recordingsDir: dir,
      sessionId: "00000000-0000-0000-0000-000000000000",
      channel: ++channel,
      uid: "u",
      account: "u_all",
      target: "vm1",
      kind,
      arg,
      command: kind === "exec" ? parseCommand(arg) : undefined,
      pty: undefined,
      record: route("all").record,
      now: () => 0,
      terminate: () => undefined,
      log: () => undefined,
    });
    const taps = a.up !== undefined;
    await a.close({ up: 0, down: 0 });
    return { recorded: started.length > 0, taps };
  };
  it("records any exec that is not exactly a transfer", async () => {
    for (const c of ["rsync ; exec bash -l", "scp -f x; bash -i", "git-upload-pack 'r'; sh", "/usr/lib/openssh/sftp-server; sh", "uptime"])
      expect((await open("exec", c)).recorded).toBe(true);
  });
  it("does not record parsed transfers and the sftp subsystem, but watches them", async () => {
    for (const c of ["scp -f x", "/usr/lib/openssh/sftp-server"]) expect(await open("exec", c)).toEqual({ recorded: false, taps: true });
    for (const c of ["rsync --server -e.L . x", "git-upload-pack 'r'"]) expect((await open("exec", c)).recorded).toBe(false);
    expect(await open("subsystem", "sftp")).toEqual({ recorded: false, taps: true });
  });
});
