/**
 * docs/policy.md is generated from the policy schema (src/policy/reference.ts): it must equal
 * `renderPolicyReference()`, and every key must carry a description, so that a
 * new key without one, or a schema change without a regenerated reference, fails CI.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { type JsonSchemaNode, parsePolicyText, policyJsonSchema, policyKeyRows, renderPolicyReference } from "../../src/policy/index.ts";

const DOC = fileURLToPath(new URL("../../docs/policy.md", import.meta.url));
const REGENERATE = "UPDATE_REFERENCE=1 npx vitest run test/unit/policy-reference.test.ts";

/** Dotted paths of every key under `s` that has no description (walks the JSON Schema itself). */
function undescribed(s: JsonSchemaNode, path: string, out: string[]): string[] {
  for (const [key, child] of Object.entries(s.properties ?? {})) {
    const p = path === "" ? key : `${path}.${key}`;
    if (!child.description?.trim()) out.push(p);
    undescribed(child, p, out);
  }
  if (s.items !== undefined) undescribed(s.items, `${path}[]`, out);
  if (typeof s.additionalProperties === "object") undescribed(s.additionalProperties, `${path}.<name>`, out);
  for (const b of [...(s.anyOf ?? []), ...(s.oneOf ?? [])]) undescribed(b, path, out);
  return out;
}

describe("policy reference", () => {
  it("docs/policy.md is renderPolicyReference() (regenerated with UPDATE_REFERENCE=1)", () => {
    const rendered = renderPolicyReference();
    if (process.env.UPDATE_REFERENCE === "1") writeFileSync(DOC, rendered);
    let committed = "";
    try {
      committed = readFileSync(DOC, "utf8");
    } catch {
      // A missing file is a difference like any other.
    }
    expect(committed === rendered, `docs/policy.md differs from renderPolicyReference(); run \`${REGENERATE}\` to regenerate it`).toBe(
      true,
    );
  });

  it("every key has a description", () => {
    const schema = policyJsonSchema() as JsonSchemaNode;
    const missing = undescribed(schema, "", []);
    expect(missing, 'add .describe("…") to these keys in src/policy/schema.ts').toEqual([]);
  });

  it("the walk catches a key without a description", () => {
    const fake: JsonSchemaNode = {
      type: "object",
      properties: {
        a: { type: "object", description: "A.", properties: { b: { type: "string" } } },
        r: { type: "array", description: "R.", items: { type: "object", properties: { c: { type: "string", description: "C." } } } },
        m: { type: "object", description: "M.", additionalProperties: { type: "object", properties: { d: { type: "string" } } } },
        u: { description: "U.", anyOf: [{ type: "boolean" }, { type: "object", properties: { e: { type: "string" } } }] },
      },
    };
    expect(undescribed(fake, "", [])).toEqual(["a.b", "m.<name>.d", "u.e"]);
    expect(policyKeyRows(fake).map((r) => r.path)).toEqual(["a", "a.b", "r", "r[].c", "m", "m.<name>.d", "u", "u.e"]);
  });

  it("is deterministic and has one section per top-level key, one row per key", () => {
    const text = renderPolicyReference();
    expect(renderPolicyReference()).toBe(text);
    const sections = [...text.matchAll(/^## (\S+)$/gm)].map((m) => m[1]);
    expect(sections).toEqual(["version", "gateway", "directory", "auth", "targets", "routes", "network", "state", "web"]);
    const rows = policyKeyRows();
    expect(new Set(rows.map((r) => r.path)).size).toBe(rows.length);
    for (const r of rows) expect(text).toContain(`| \`${r.path}\` |`);
  });

  it("renders types, constraints and defaults as a policy writes them", () => {
    const byPath = new Map(policyKeyRows().map((r) => [r.path, r]));
    const row = (p: string) => {
      const r = byPath.get(p);
      if (!r) throw new Error(`no row ${p}`);
      return r;
    };
    expect(row("gateway.audit_syslog.url").default).toBe("required");
    expect(row("gateway.banner").default).toBe("—");
    expect(row("gateway.listen")).toMatchObject({ type: "non-empty list of string", default: '`["0.0.0.0:22"]`' });
    // Durations and sizes show their default as written, not in ms/bytes.
    expect(row("gateway.limits.login_grace")).toMatchObject({ type: "duration", default: "`30s`" });
    expect(row("gateway.limits.idle_timeout").default).toBe("`1h`");
    expect(row("routes[].record.max_bytes")).toMatchObject({ type: "size", default: "`64MiB`" });
    expect(row("routes[].record")).toMatchObject({ type: "true | false | object", default: "`true`" });
    expect(row("gateway.on_route_removed").type).toBe("`keep` | `terminate`");
    expect(row("auth.totp.digits").type).toBe("`6` | `7` | `8`");
    expect(row("auth.chains").type).toBe("non-empty list of non-empty list of (`password` | `totp` | `publickey`)");
    expect(row("targets.<name>.port")).toMatchObject({ type: "integer 1–65535", default: "`22`" });
    expect(row("gateway.limits.max_channels").type).toBe("integer > 0, ≤ 10000");
    expect(row("routes[].env").default).toBe('`[LANG, "LC_*", TERM, TZ]`');
    expect(row("version")).toMatchObject({ type: "`1`", default: "required" });
    // Network: a list whose items transform (durations) keeps its default through x-default.
    expect(row("network.vips[].advert_interval")).toMatchObject({ type: "duration", default: "`1s`" });
    expect(row("network.vips").default).toBe("`[]`");
    expect(row("network.port_forwards[].protocol")).toMatchObject({ type: '`tcp` | `udp` | `"tcp+udp"`', default: "`tcp`" });
    expect(row("network.keepalived").default).toBe("`{}`");
    expect(row("network.public_ip").default).toBe("required");
    // Pipes inside a cell are escaped so the table keeps its columns.
    for (const line of renderPolicyReference()
      .split("\n")
      .filter((l) => l.startsWith("| `"))) {
      expect(line.replace(/\\\|/g, "").split("|").length, line).toBe(6);
    }
  });

  it("the defaults shown parse to the values the schema fills in", () => {
    const minimal = [
      "version: 1",
      "gateway: {}",
      "directory: { local_users: [{ uid: a, password_hash: x }] }",
      'targets: { t: { host: h, host_key: "ssh-ed25519 AAAA" } }',
      "routes: [{ users: [a], alias: x, target: t }]",
    ].join("\n");
    const written = [
      "version: 1",
      "gateway: { limits: { login_grace: 30s, idle_timeout: 1h }, upstream_timeout: 10s, stop_timeout: 30s, audit_checkpoint_interval: 60s }",
      "directory: { local_users: [{ uid: a, password_hash: x }] }",
      'targets: { t: { host: h, host_key: "ssh-ed25519 AAAA" } }',
      "routes: [{ users: [a], alias: x, target: t, record: { max_bytes: 64MiB } }]",
      "auth: { totp: { period: 30s }, lockout: { within: 15m, lock_for: 15m } }",
    ].join("\n");
    expect(parsePolicyText(written, "w.yaml").policy).toEqual(parsePolicyText(minimal, "w.yaml").policy);
    const vip = "{ instance: a, interface: eth0, virtual_router_id: 1, addresses: [203.0.113.10/24] }";
    const net = (extra: string, v: string) =>
      `${minimal}\nnetwork: { public_interface: eth0, public_ip: 203.0.113.11, vips: [${v}]${extra} }`;
    const writtenNet = net(
      ", table: varco, private_networks: [], masquerade: true, port_forwards: [], forward_allow: [], bridges: [], keepalived: {}",
      vip.replace(" }", ", priority: 100, nopreempt: true, advert_interval: 1s, track_gateway_health: false, unicast_peers: [] }"),
    );
    expect(parsePolicyText(writtenNet, "w.yaml").policy).toEqual(parsePolicyText(net("", vip), "w.yaml").policy);
    expect(parsePolicyText(net("", vip), "m.yaml").policy.network?.vips[0]?.advert_interval).toBe(1000);
    const p = parsePolicyText(minimal, "m.yaml").policy;
    expect(p.gateway.limits.login_grace).toBe(30_000);
    expect(p.routes[0]?.record.max_bytes).toBe(64 * 1024 * 1024);
  });
});
