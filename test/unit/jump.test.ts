/**
 * authorizeJump: jump-host mode (`ssh -J`) is allowed only to the target of a route that grants the
 * identity (by uid or group) with `allow.jump`, requested by the target's configured host string or
 * its target name, on the target's port. Everything else is refused.
 */
import { beforeAll, describe, expect, it } from "vitest";
import type { AuthenticatedIdentity } from "../../src/auth/index.ts";
import { parsePolicyText } from "../../src/policy/index.ts";
import { authorizeChannel, authorizeJump } from "../../src/routing/index.ts";
import { identityFor } from "../helpers/identity.ts";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz";
const { policy } = parsePolicyText(
  `version: 1
gateway: {}
directory: { ldap: { url: "ldap://x", bind_dn: cn=a, bind_password_file: p, user_base: ou=p } }
targets:
  vm1-mario: { host: 10.10.0.11, user: mario, host_key: "${KEY}" }
  vm2-anna: { host: 10.10.0.12, port: 2222, host_key: "${KEY}" }
  db: { host: DB.Example.org, host_key: "${KEY}" }
  web: { host: 10.10.0.13, host_key: "${KEY}" }
routes:
  - { users: [mario.rossi], alias: vm1, target: vm1-mario }
  - { users: [mario.rossi], alias: vm1j, target: vm1-mario, allow: { jump: true, shell: false, exec: false } }
  - { groups: [astro], alias: anna, target: vm2-anna, allow: { jump: true } }
  - { users: [mario.rossi], alias: db, target: db, allow: { jump: true } }
  - { users: [anna.bianchi], alias: web, target: web }
`,
  "/p.yaml",
);

describe("authorizeJump", () => {
  let mario: AuthenticatedIdentity;
  let anna: AuthenticatedIdentity;
  let carlo: AuthenticatedIdentity;
  beforeAll(async () => {
    mario = await identityFor("mario.rossi", []);
    anna = await identityFor("anna.bianchi", ["astro"]);
    carlo = await identityFor("carlo.verdi", []);
  });

  it("allows the configured host and port when one of two routes to the target has jump", () => {
    const d = authorizeJump(policy, mario, "10.10.0.11", 22);
    expect(d.allow).toBe(true);
    if (!d.allow) return;
    expect(d.targetName).toBe("vm1-mario");
    expect(d.route.alias).toBe("vm1j");
    expect(d.target.host).toBe("10.10.0.11");
  });

  it("allows the target's name, which the gateway dials as the configured host", () => {
    const d = authorizeJump(policy, mario, "vm1-mario", 22);
    expect(d.allow && d.target.host).toBe("10.10.0.11");
  });

  it("allows a group route on its own port, and only there", () => {
    expect(authorizeJump(policy, anna, "10.10.0.12", 2222).allow).toBe(true);
    expect(authorizeJump(policy, anna, "10.10.0.12", 22)).toEqual({ allow: false, reason: "not_a_target" });
    expect(authorizeJump(policy, mario, "10.10.0.12", 2222)).toEqual({ allow: false, reason: "not_a_target" });
  });

  it("refuses another port of an allowed host", () => {
    expect(authorizeJump(policy, mario, "10.10.0.11", 2222).allow).toBe(false);
    expect(authorizeJump(policy, mario, "10.10.0.11", 23).allow).toBe(false);
    expect(authorizeJump(policy, mario, "10.10.0.11", 0)).toEqual({ allow: false, reason: "invalid" });
    expect(authorizeJump(policy, mario, "10.10.0.11", 65536)).toEqual({ allow: false, reason: "invalid" });
    expect(authorizeJump(policy, mario, "10.10.0.11", 22.5)).toEqual({ allow: false, reason: "invalid" });
  });

  it("refuses other spellings of the same address, and never resolves names", () => {
    for (const host of [
      "10.10.0.011",
      "010.10.0.11",
      "10.10.11",
      "168427531",
      "0x0a0a000b",
      "::ffff:10.10.0.11",
      "[10.10.0.11]",
      " 10.10.0.11",
      "10.10.0.11 ",
      "10.10.0.11.",
      "10.10.0.11\u0000",
      "VM1-MARIO",
      "vm1",
      "mario.rossi_vm1j",
      "localhost",
      "",
    ]) {
      expect(authorizeJump(policy, mario, host, 22).allow, host).toBe(false);
    }
  });

  it("compares a configured DNS name ASCII case-insensitively, nothing more", () => {
    expect(authorizeJump(policy, mario, "db.example.org", 22).allow).toBe(true);
    expect(authorizeJump(policy, mario, "DB.EXAMPLE.ORG", 22).allow).toBe(true);
    expect(authorizeJump(policy, mario, "db.example.org.", 22).allow).toBe(false);
    expect(authorizeJump(policy, mario, "db.example.org:22", 22).allow).toBe(false);
    // Unicode case folding is not DNS case folding: the Kelvin sign lower-cases to "k".
    expect(authorizeJump(policy, mario, "db.example.or\u212a", 22).allow).toBe(false);
  });

  it("refuses a target reachable only by a route without jump, naming it", () => {
    expect(authorizeJump(policy, anna, "10.10.0.13", 22)).toEqual({ allow: false, reason: "jump_not_allowed", targetName: "web" });
  });

  it("refuses a user with no route to the target, even where someone else has jump", () => {
    expect(authorizeJump(policy, carlo, "10.10.0.11", 22)).toEqual({ allow: false, reason: "not_a_target" });
    expect(authorizeJump(policy, carlo, "10.10.0.12", 2222).allow).toBe(false);
  });

  it("is off by default, and never granted by port_forwarding nor grants it", () => {
    const { policy: p } = parsePolicyText(
      `version: 1
gateway: {}
directory: { ldap: { url: "ldap://x", bind_dn: cn=a, bind_password_file: p, user_base: ou=p } }
targets:
  vm1: { host: 10.10.0.11, host_key: "${KEY}" }
routes:
  - { users: [mario.rossi], alias: vm1, target: vm1, allow: { port_forwarding: true } }
  - { users: [mario.rossi], alias: j, target: vm1, allow: { jump: true } }
`,
      "/p.yaml",
    );
    const [plain, withJump] = p.routes;
    if (!plain || !withJump) throw new Error("test policy has two routes");
    expect(plain.allow.jump).toBe(false);
    expect(authorizeJump({ ...p, routes: [plain] }, mario, "10.10.0.11", 22)).toEqual({
      allow: false,
      reason: "jump_not_allowed",
      targetName: "vm1",
    });
    // A route with jump but without port_forwarding still refuses -L on a uid_alias login.
    expect(authorizeChannel(withJump, { type: "direct-tcpip", host: "10.10.0.11", port: 22 }).allow).toBe(false);
  });

  it("refuses an identity that did not come from a completed login", () => {
    const forged = { uid: "mario.rossi", groups: [] } as unknown as AuthenticatedIdentity;
    expect(() => authorizeJump(policy, forged, "10.10.0.11", 22)).toThrow(TypeError);
  });

  it("rejects a non-boolean jump in the policy with a clear message", () => {
    expect(() =>
      parsePolicyText(
        `version: 1
gateway: {}
directory: { ldap: { url: "ldap://x", bind_dn: cn=a, bind_password_file: p, user_base: ou=p } }
targets:
  vm1: { host: 10.10.0.11, host_key: "${KEY}" }
routes:
  - { users: [mario.rossi], alias: j, target: vm1, allow: { jump: "yes" } }
`,
        "/p.yaml",
      ),
    ).toThrow(/jump/);
  });
});
