/**
 * The README's complete network example is the network part of policies/gateway.yaml, `policy check`
 * accepts it, and what it renders loads: the nft table with `nft -c` (in a namespace this test
 * creates) and the keepalived file with `keepalived --config-test` through a main config that
 * includes it.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT } from "../helpers/harness.ts";
import { createNetns } from "../helpers/netns.ts";

const isRoot = process.getuid?.() === 0;
const dir = mkdtempSync(join(tmpdir(), "varco-example-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const readme = readFileSync(join(ROOT, "README.md"), "utf8");
const shipped = readFileSync(join(ROOT, "policies/gateway.yaml"), "utf8");
const block = /<!-- network example: begin -->\n```yaml\n([\s\S]*?)```\n<!-- network example: end -->/.exec(readme)?.[1];
const varco = (...args: string[]) => execa("node", [join(ROOT, "bin/varco.mjs"), ...args], { reject: false });

describe("the README's network example", () => {
  it("is the network part of policies/gateway.yaml, and policy check accepts it", async () => {
    expect(block).toBeDefined();
    expect(shipped.slice(shipped.indexOf("\nnetwork:") + 1)).toBe(block);
    const r = await varco("policy", "check", join(ROOT, "policies/gateway.yaml"));
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
  });

  it.runIf(isRoot)("renders an nft table that nft loads and a keepalived file keepalived accepts", async () => {
    // Node A's policy with paths of its own: the secrets it names, and keepalived files in the temp folder.
    const policy = join(dir, "gateway.yaml");
    writeFileSync(
      policy,
      shipped
        .replace("config_file: /etc/keepalived/conf.d/varco.conf", `config_file: ${join(dir, "ka/varco.conf")}`)
        .replace("main_config: /etc/keepalived/keepalived.conf", `main_config: ${join(dir, "ka/keepalived.conf")}`),
    );
    mkdirSync(join(dir, "secrets"), { mode: 0o700 });
    writeFileSync(join(dir, "secrets/vrrp.pw"), "s3cr3t\n", { mode: 0o600 });
    writeFileSync(join(dir, "secrets/ldap.pw"), "x\n", { mode: 0o600 });
    const nft = await varco("--policy", policy, "net", "render", "nft");
    expect(nft.stderr).toBe("");
    const ka = await varco("--policy", policy, "net", "render", "keepalived");
    expect(ka.exitCode).toBe(0);
    mkdirSync(join(dir, "ka"));
    // The rendering masks the password; keepalived only needs a valid one.
    writeFileSync(join(dir, "ka/varco.conf"), ka.stdout.replace(/auth_pass \*+/g, "auth_pass s3cr3t"));
    writeFileSync(join(dir, "ka/keepalived.conf"), `include ${join(dir, "ka/varco.conf")}\n`);
    // A namespace with the example's eth0 and eth1 (veth pairs: this kernel has no dummy links).
    const n = await createNetns(["ex"]);
    try {
      for (const [a, b] of [
        ["eth0", "peer0"],
        ["eth1", "peer1"],
      ] as const)
        await n.ip("ex", "link", "add", a, "type", "veth", "peer", "name", b);
      const check = await execa("ip", ["netns", "exec", n.ns("ex"), "nft", "-c", "-f", "-"], { input: nft.stdout, reject: false });
      expect(check.stderr).toBe("");
      expect(check.exitCode).toBe(0);
      const test = await n.exec("ex", ["keepalived", "--config-test", "-f", join(dir, "ka/keepalived.conf")]);
      expect(test.exitCode, test.stderr).toBe(0);
    } finally {
      await n.destroy();
    }
  });
});
