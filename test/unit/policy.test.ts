import { describe, expect, it } from "vitest";
import { formatIssue, PolicyError, parseDurationMs, parsePolicyText, parseSizeBytes, policyJsonSchema } from "../../src/policy/index.ts";

const MINIMAL = `version: 1
gateway:
  listen: ["127.0.0.1:2222"]
directory:
  ldap:
    url: ldap://127.0.0.1:389
    bind_dn: cn=varco,dc=example,dc=org
    bind_password_file: secrets/ldap.pw
    user_base: ou=people,dc=example,dc=org
targets:
  vm1:
    host: 10.0.0.1
    host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz"
routes:
  - users: [mario.rossi]
    alias: vm1
    target: vm1
`;

function issues(text: string): string[] {
  try {
    parsePolicyText(text, "/p/gateway.yaml");
  } catch (err) {
    if (err instanceof PolicyError) return err.issues.map(formatIssue);
    throw err;
  }
  return [];
}

describe("policy loading", () => {
  it("fills safe defaults for a minimal policy", () => {
    const { policy, resolvePath } = parsePolicyText(MINIMAL, "/p/gateway.yaml");
    expect(policy.auth.chains).toEqual([["password", "totp"]]);
    expect(policy.auth.totp.period).toBe(30_000);
    expect(policy.gateway.limits.login_grace).toBe(30_000);
    expect(policy.routes[0]?.allow).toEqual({
      shell: true,
      exec: true,
      sftp: true,
      scp: true,
      port_forwarding: false,
      agent_forwarding: false,
      jump: false,
      x11: false,
    });
    expect(policy.routes[0]?.record).toEqual({
      enabled: true,
      input: false,
      on_recording_failure: "terminate",
      max_bytes: 64 * 1024 * 1024,
    });
    expect(policy.network).toBeUndefined();
    expect(resolvePath("secrets/ldap.pw")).toBe("/p/secrets/ldap.pw");
    expect(resolvePath("/abs/x")).toBe("/abs/x");
  });

  it("reports an unknown key at the key's own line and column", () => {
    const text = MINIMAL.replace('  listen: ["127.0.0.1:2222"]', '  listen: ["127.0.0.1:2222"]\n  lisen: 1');
    expect(issues(text)).toEqual(['/p/gateway.yaml:4:3: gateway: unknown key "lisen" (check the spelling; see `varco policy schema`)']);
  });

  it("reports every error, each with file:line:col", () => {
    const text = MINIMAL.replace("host: 10.0.0.1", "host: 10.0.0.1\n    port: 0").replace("alias: vm1", "alias: vm_1");
    const found = issues(text);
    expect(found).toHaveLength(2);
    expect(found[0]).toMatch(/^\/p\/gateway\.yaml:13:11: targets\.vm1\.port: /);
    expect(found[1]).toMatch(/^\/p\/gateway\.yaml:\d+:12: routes\.0\.alias: an alias is letters/);
  });

  it("reports a missing required section", () => {
    const text = MINIMAL.replace(/routes:[\s\S]*$/, "");
    expect(issues(text)).toEqual([expect.stringMatching(/^\/p\/gateway\.yaml:1:1: missing required key "routes"/)]);
  });

  it("reports YAML syntax errors with their position", () => {
    expect(issues("version: 1\ngateway: [unclosed\n")[0]).toMatch(/^\/p\/gateway\.yaml:\d+:\d+: YAML: /);
  });

  it("rejects a route naming an unknown target, and a duplicated alias for the same user", () => {
    const text = `${MINIMAL}  - users: [mario.rossi]\n    alias: vm1\n    target: nowhere\n`;
    const found = issues(text);
    expect(found.some((l) => /:\d+:13: route "vm1" names unknown target "nowhere" \(targets: vm1\)/.test(l))).toBe(true);
    expect(found.some((l) => /alias "vm1" is given to user:mario.rossi twice/.test(l))).toBe(true);
  });

  it("refuses in `policy check` what serve would refuse: TOTP secrets in a directory that is not configured", () => {
    const text = MINIMAL.replace(
      /directory:\n( {2}.*\n)+?targets:/,
      'directory:\n  local_users:\n    - { uid: root1, password_hash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA" }\nauth: { totp: { secrets: ldap, ldap_attribute: description } }\ntargets:',
    );
    expect(issues(text).some((l) => l.includes("secrets: ldap needs directory.ldap"))).toBe(true);
  });

  it("rejects a malformed host key and a bad duration", () => {
    const text = MINIMAL.replace('host_key: "ssh-ed25519', 'host_key: "ssh-dss').replace(
      "    user_base:",
      "    timeout: 5 minutes\n    user_base:",
    );
    const found = issues(text);
    expect(found.some((l) => l.includes("host_key: must be an OpenSSH public key line"))).toBe(true);
    expect(found.some((l) => l.includes('"5 minutes" is not a duration'))).toBe(true);
  });

  it("prints a JSON Schema that describes the top-level keys", () => {
    const schema = policyJsonSchema() as { properties: Record<string, unknown>; required: string[] };
    expect(Object.keys(schema.properties)).toEqual(
      expect.arrayContaining(["version", "gateway", "directory", "targets", "routes", "network"]),
    );
    expect(schema.required).toEqual(expect.arrayContaining(["version", "directory", "targets", "routes"]));
  });
});

describe("units", () => {
  it("parses durations and sizes", () => {
    expect(parseDurationMs("30s")).toBe(30_000);
    expect(parseDurationMs("15m")).toBe(900_000);
    expect(parseDurationMs("12h")).toBe(43_200_000);
    expect(parseDurationMs("500ms")).toBe(500);
    expect(parseDurationMs("5 minutes")).toBeUndefined();
    expect(parseSizeBytes("64MiB")).toBe(64 * 1024 * 1024);
    expect(parseSizeBytes("1GiB")).toBe(1024 ** 3);
    expect(parseSizeBytes("lots")).toBeUndefined();
  });
});

describe("policy notes (valid, but probably not what was meant)", () => {
  const notes = (allow: string) =>
    parsePolicyText(`${MINIMAL}    allow: ${allow}\n`, "/p/gateway.yaml").notes.map((n) => `${n.line}:${n.col}: ${n.message}`);
  it("says that scp, sftp or shell set to false do not keep those programs out while exec is allowed", () => {
    const [n, ...more] = notes("{ scp: false, shell: false }");
    expect(more).toEqual([]);
    expect(n).toMatch(/^18:\d+: allow\.exec is true, so allow\.scp: false, allow\.shell: false does not keep those programs out/);
    expect(n).toContain("set exec: false");
  });
  it("says nothing for the defaults or a route without exec", () => {
    expect(parsePolicyText(MINIMAL, "/p/gateway.yaml").notes).toEqual([]);
    expect(notes("{ exec: false, scp: false, shell: false }")).toEqual([]);
    expect(notes("{ port_forwarding: true }")).toEqual([]);
  });
});
