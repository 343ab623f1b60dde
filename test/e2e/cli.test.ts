/**
 * The command line's surface: one-line errors without internal class names, `--debug` for the
 * stack. Runs the real `bin/varco.mjs`.
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT } from "../helpers/harness.ts";

const dir = mkdtempSync(join(tmpdir(), "varco-cli-"));
const policy = join(dir, "gateway.yaml");
copyFileSync(join(ROOT, "policies/gateway.yaml"), policy);
const varco = (...args: string[]) => execa("node", [join(ROOT, "bin/varco.mjs"), ...args], { reject: false, cwd: dir });

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("errors", () => {
  it("are one line a human can act on, without internal class names; --debug adds the stack", async () => {
    // The shipped example names secret files that do not exist in this folder.
    const r = await varco("--policy", policy, "net", "render", "keepalived");
    expect(r.exitCode).toBe(1);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^varco: network\.vips\[\w+\]\.auth_pass_file: cannot read .*vrrp\.pw/);
    expect(r.stderr).not.toMatch(/SecretError|Error:/);
    const d = await varco("--debug", "--policy", policy, "net", "render", "keepalived");
    expect(d.stderr).toMatch(/\n\s+at /);
  });
});

describe("finding the policy and the version", () => {
  it("--version prints package.json's version", async () => {
    const r = await varco("--version");
    expect(r.stdout.trim()).toBe(JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version);
  });

  it.skipIf(existsSync("/etc/varco/gateway.yaml"))(
    "without --policy or VARCO_POLICY it reads /etc/varco/gateway.yaml, never ./policies, and says what it tried",
    async () => {
      const env = { ...process.env };
      delete env.VARCO_POLICY;
      // A policies/gateway.yaml in the working directory is not picked up.
      for (const args of [
        ["net", "status"],
        ["policy", "check"],
      ]) {
        const r = await execa("node", [join(ROOT, "bin/varco.mjs"), ...args], { reject: false, cwd: ROOT, env, extendEnv: false });
        expect(r.exitCode).toBe(1);
        expect(r.stderr.trim()).toBe(
          "varco: no policy file: --policy not given, VARCO_POLICY not set, /etc/varco/gateway.yaml does not exist",
        );
      }
      const viaEnv = await execa("node", [join(ROOT, "bin/varco.mjs"), "policy", "check"], {
        reject: false,
        cwd: dir,
        env: { ...env, VARCO_POLICY: policy },
        extendEnv: false,
      });
      expect(viaEnv.stdout).toContain(`${policy}: ok`);
    },
  );
});
