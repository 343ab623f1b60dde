/**
 * The README's first command: `varco demo` starts slapd, two sshd targets and the gateway, prints
 * what to type, a real OpenSSH login with the printed password and a code from the printed secret
 * works, and Ctrl-C (SIGINT) stops everything it started and removes its folder.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, describe, expect, it } from "vitest";
import { currentCode } from "../../src/auth/index.ts";
import { freePort } from "../../src/demo/index.ts";
import { ASKPASS, ROOT } from "../helpers/harness.ts";

const cwd = mkdtempSync(join(tmpdir(), "varco-demo-"));
afterAll(() => rmSync(cwd, { recursive: true, force: true }));

describe("varco demo", () => {
  it("prints what to type, lets the stock ssh client in, and cleans up on Ctrl-C", async () => {
    const port = await freePort();
    const demo = execa("node", [join(ROOT, "bin/varco.mjs"), "demo", "--port", String(port), "--no-install"], { cwd, reject: false });
    let out = "";
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`demo did not start:\n${out}`)), 60_000);
      demo.stdout?.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes("codes now:")) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    expect(out).toContain(`ssh -p ${port} -o UserKnownHostsFile=/dev/null mario.rossi_vm1@127.0.0.1`);
    const password = /Password: (\S+)/.exec(out)?.[1] ?? "";
    const secret = /mario\.rossi {3}([A-Z2-7]+)/.exec(out)?.[1] ?? "";
    expect(password).not.toBe("");
    const code = currentCode({ issuer: "varco", digits: 6, periodMs: 30_000, window: 1 }, secret, Date.now());
    const r = await execa(
      "ssh",
      [
        "-F",
        "/dev/null",
        "-p",
        String(port),
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "PubkeyAuthentication=no",
        "mario.rossi_vm1@127.0.0.1",
        "echo hello from the demo target",
      ],
      {
        reject: false,
        stdin: "ignore",
        env: { SSH_ASKPASS: ASKPASS, SSH_ASKPASS_REQUIRE: "force", DISPLAY: ":0", VARCO_TEST_PASSWORD: password, VARCO_TEST_CODE: code },
      },
    );
    expect(r.stdout).toBe("hello from the demo target");
    expect(existsSync(join(cwd, ".demo"))).toBe(true);
    demo.kill("SIGINT");
    const done = await demo;
    expect(done.stdout).toContain("stopped; everything the demo started is gone.");
    expect(existsSync(join(cwd, ".demo"))).toBe(false);
    const left = await execa("pgrep", ["-f", join(cwd, ".demo")], { reject: false });
    expect(left.stdout).toBe("");
  });
});
