import { beforeAll, describe, expect, it } from "vitest";
import type { AuthenticatedIdentity } from "../../src/auth/index.ts";
import { splitAccount as parseAccount } from "../../src/auth/index.ts";
import { parsePolicyText } from "../../src/policy/index.ts";
import { refusalMessage, resolveRoute } from "../../src/routing/index.ts";
import { identityFor } from "../helpers/identity.ts";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz";
const { policy } = parsePolicyText(
  `version: 1
gateway: {}
directory: { ldap: { url: "ldap://x", bind_dn: cn=a, bind_password_file: p, user_base: ou=p } }
targets:
  vm1-mario: { host: 10.0.0.1, user: mario, host_key: "${KEY}" }
  vm2-anna: { host: 10.0.0.2, host_key: "${KEY}" }
routes:
  - { users: [mario.rossi], alias: vm1, target: vm1-mario }
  - { users: [anna.bianchi], alias: vm2, target: vm2-anna }
  - { groups: [astro], alias: shared, target: vm2-anna, allow: { sftp: false } }
`,
  "/p.yaml",
);

describe("account syntax", () => {
  it("splits at the last underscore", () => {
    expect(parseAccount("mario.rossi_vm1")).toEqual({ uid: "mario.rossi", alias: "vm1" });
    expect(parseAccount("first_last_vm2")).toEqual({ uid: "first_last", alias: "vm2" });
    expect(parseAccount("mario.rossi")).toEqual({ uid: "mario.rossi", alias: undefined });
    expect(parseAccount("mario.rossi_")).toEqual({ uid: "mario.rossi", alias: undefined });
    expect(parseAccount("_vm1")).toEqual({ uid: "_vm1", alias: undefined });
  });
});

describe("resolveRoute", () => {
  let mario: AuthenticatedIdentity;
  let anna: AuthenticatedIdentity;
  beforeAll(async () => {
    mario = await identityFor("mario.rossi", ["astro"]);
    anna = await identityFor("anna.bianchi", []);
  });

  it("approves a user's own alias with the target's login name", () => {
    const d = resolveRoute(policy, mario, "vm1");
    expect(d.kind).toBe("approved");
    if (d.kind !== "approved") return;
    expect(d.approved.targetName).toBe("vm1-mario");
    expect(d.approved.login).toBe("mario");
  });

  it("approves a group route and defaults the login to the uid", () => {
    const d = resolveRoute(policy, mario, "shared");
    expect(d.kind === "approved" && d.approved.login).toBe("mario.rossi");
    expect(d.kind === "approved" && d.approved.route.allow.sftp).toBe(false);
  });

  it("refuses an identity that did not come from a completed login", () => {
    const forged = {
      uid: "mario.rossi",
      groups: ["astro"],
      factors: ["password", "totp"],
      breakGlass: false,
    } as unknown as AuthenticatedIdentity;
    expect(() => resolveRoute(policy, forged, "vm1")).toThrow(TypeError);
  });

  it("refuses another user's alias, listing only the caller's aliases", () => {
    expect(resolveRoute(policy, mario, "vm2")).toEqual({ kind: "refused", reason: "no_route", aliases: ["shared", "vm1"] });
    expect(resolveRoute(policy, anna, "shared")).toEqual({ kind: "refused", reason: "no_route", aliases: ["vm2"] });
    expect(resolveRoute(policy, anna, undefined)).toEqual({ kind: "refused", reason: "no_alias", aliases: ["vm2"] });
  });

  it("writes a refusal naming only the caller's accounts", () => {
    const msg = refusalMessage("mario.rossi_vm2", "mario.rossi", ["shared", "vm1"]);
    expect(msg).toContain("mario.rossi_shared");
    expect(msg).toContain("mario.rossi_vm1");
    expect(refusalMessage("x_y", "x", [])).toContain("has no routes");
    // A name with terminal escapes cannot drive the user's terminal.
    const escaped = refusalMessage("evil\u001b]0;pwned\u0007_x", "evil\u001b]0;pwned\u0007", []);
    expect(escaped.includes("\u001b") || escaped.includes("\u0007")).toBe(false);
  });
});
