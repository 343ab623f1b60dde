/**
 * `varco user ssh-config`: the blocks it prints, used as written by the real OpenSSH client
 * (`ssh -F`): one login per alias, and the next command to the same alias rides the shared
 * connection without a password or a code. Real slapd, sshd targets and gateway (test/helpers/harness.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, ROOT, startHarness } from "../helpers/harness.ts";

let h: Harness;
let dir: string;
const MARIO_PW = "mario-demo-pw";

beforeAll(async () => {
  h = await startHarness();
  dir = mkdtempSync(join(tmpdir(), "varco-sshconfig-"));
});
afterAll(async () => {
  await h?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const varco = (...args: string[]) => execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, ...args], { reject: false });

describe("varco user ssh-config", () => {
  it("prints one Host per alias with connection sharing and the gateway's known_hosts line; ssh -F uses them", async () => {
    const r = await varco("user", "ssh-config", "Mario.Rossi", "--gateway", `127.0.0.1:${h.port}`);
    expect(r.exitCode, r.stderr).toBe(0);
    // The typed spelling resolves to the canonical uid; mario has vm1 (by name) and shared (group astro).
    expect(r.stdout).toContain(`Host vm1\n    HostName 127.0.0.1\n    Port ${h.port}\n    User mario.rossi_vm1\n    ControlMaster auto`);
    expect(r.stdout).toContain("Host shared\n");
    expect(r.stdout).not.toContain("Host vm2\n");
    const known = r.stdout
      .split("\n")
      .filter((l) => l.startsWith(`# [127.0.0.1]:${h.port} ssh-ed25519 `))
      .map((l) => l.slice(2));
    expect(known).toHaveLength(1);
    const cfg = join(dir, "config");
    const kh = join(dir, "known_hosts");
    writeFileSync(cfg, r.stdout);
    writeFileSync(kh, `${known.join("\n")}\n`);
    // The control socket goes to the test's folder (ControlPath ~/.ssh/varco-%C would be root's home);
    // OpenSSH takes the first value given, so -o wins over the file.
    const ssh = (alias: string, cmd: string, env: NodeJS.ProcessEnv) =>
      execa(
        "ssh",
        [
          "-F",
          cfg,
          "-o",
          `ControlPath=${join(dir, "cm-%C")}`,
          "-o",
          `UserKnownHostsFile=${kh}`,
          "-o",
          "StrictHostKeyChecking=yes",
          "-o",
          "PubkeyAuthentication=no",
          "-o",
          "LogLevel=ERROR",
          alias,
          cmd,
        ],
        { reject: false, env, stdin: "ignore", timeout: 60_000 },
      );
    const first = await ssh("vm1", "echo one", h.askpassEnv(MARIO_PW, h.nextCode("mario.rossi")));
    expect(first.stderr).toBe("");
    expect(first.stdout.trim()).toBe("one");
    // The second command rides the shared connection: a wrong password and code are never asked for.
    const second = await ssh("vm1", "echo two", h.askpassEnv("wrong", "000000"));
    expect(second.stdout.trim()).toBe("two");
    expect(second.exitCode).toBe(0);
    // Another alias is another login.
    const shared = await ssh("shared", "echo three", h.askpassEnv(MARIO_PW, h.nextCode("mario.rossi")));
    expect(shared.stdout.trim()).toBe("three");
    for (const alias of ["vm1", "shared"])
      await execa("ssh", ["-F", cfg, "-o", `ControlPath=${join(dir, "cm-%C")}`, "-O", "exit", alias], { reject: false, timeout: 10_000 });
  });

  it("refuses a user with no route, and a malformed --gateway", async () => {
    const none = await varco("user", "ssh-config", "nobody.here", "--gateway", "gw.example.org");
    expect(none.exitCode).toBe(1);
    expect(none.stderr).toContain("may use no route");
    const bad = await varco("user", "ssh-config", "mario.rossi", "--gateway", "a:b:c");
    expect(bad.exitCode).toBe(2);
  });
});
