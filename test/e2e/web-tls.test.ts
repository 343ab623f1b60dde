/**
 * The web console over TLS (`web.tls`), end to end: the real gateway serves HTTPS with the
 * configured certificate (signed by a throwaway CA the client trusts, test/helpers/tls.ts), sends HSTS and `__Host-` cookies with
 * `Secure`, and refuses to start when the private key is readable by group or others.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, ROOT, startHarness } from "../helpers/harness.ts";
import { makePki } from "../helpers/tls.ts";
import { serveNodeOptions } from "../helpers/unit.ts";

let h: Harness;
let certDir: string;
let ca: string;
let cert: string;
let key: string;
let port: number;

beforeAll(async () => {
  certDir = mkdtempSync(join(tmpdir(), "varco-webtls-"));
  const pki = await makePki(certDir, { ip: ["127.0.0.1"] });
  ca = pki.caFile;
  cert = pki.certFile;
  key = pki.keyFile;
  chmodSync(key, 0o600);
  h = await startHarness({
    templateEdit: (t) =>
      `${t}\nweb:\n  listen: "127.0.0.1:0"\n  tls: { cert_file: ${cert}, key_file: ${key} }\n  auditor_groups: [astro]\n  admin_groups: [bio]\n`,
  });
  const line = /"listen":"127\.0\.0\.1:(\d+)","tls":true,"msg":"web console listening"/;
  for (let i = 0; i < 200 && !line.test(h.gatewayOutput()); i++) await new Promise((r) => setTimeout(r, 50));
  const m = line.exec(h.gatewayOutput());
  if (!m) throw new Error(`no TLS web console line in the gateway output:\n${h.gatewayOutput()}`);
  port = Number(m[1]);
}, 120_000);

afterAll(async () => {
  await h?.stop();
  rmSync(certDir, { recursive: true, force: true });
});

/** GET `path` over HTTPS, trusting only the test CA that signed the console's certificate. */
function get(path: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, ca: readFileSync(ca), servername: "" }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on("error", reject);
    req.setTimeout(10_000, () => req.destroy(new Error("timeout")));
    req.end();
  });
}

describe("web console over TLS", () => {
  it("serves the login page with the configured certificate, HSTS and __Host- Secure cookies", async () => {
    const r = await get("/login");
    expect(r.status).toBe(200);
    expect(String(r.headers["strict-transport-security"])).toMatch(/max-age=\d+/);
    const cookies = (r.headers["set-cookie"] as string[] | undefined) ?? [];
    const login = cookies.find((c) => c.startsWith("__Host-varco_login="));
    expect(login, cookies.join("\n")).toBeDefined();
    expect(login).toMatch(/;\s*Secure/i);
    expect(login).toMatch(/;\s*Path=\//i);
    expect(login).not.toMatch(/;\s*Domain=/i);
  });

  it("does not start with a private key readable by group or others, and says how to fix it", async () => {
    chmodSync(key, 0o644);
    try {
      const r = await execa("node", [...serveNodeOptions(), join(ROOT, "bin/varco.mjs"), "serve", "--policy", h.env.policyFile], {
        reject: false,
        timeout: 30_000,
      });
      expect(r.exitCode).not.toBe(0);
      const out = `${r.stdout}\n${r.stderr}`;
      expect(out).toContain(`chmod 0600 ${key}`);
      expect(out).toContain("mode 0644");
    } finally {
      chmodSync(key, 0o600);
    }
  });
});
