/**
 * The command line's surface: one-line errors without internal class names, `--debug` for the
 * stack. Runs the real `bin/varco.mjs`.
 */
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
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

describe.runIf(process.getuid?.() === 0)("state files created by a CLI run as root", () => {
  it("belong to the state folder's owner afterwards, so the service can open them", async () => {
    const d = mkdtempSync(join(tmpdir(), "varco-cli-own-"));
    const state = join(d, "state");
    mkdirSync(state, { mode: 0o750 });
    chownSync(state, 65534, 65534); // the service user (here: nobody)
    writeFileSync(
      join(d, "gateway.yaml"),
      `version: 1
gateway: { state_dir: state }
directory: { local_users: [ { uid: root1, password_hash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA" } ] }
targets: { vm1: { host: 192.0.2.1, host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz" } }
routes: [ { users: [root1], alias: vm1, target: vm1 } ]
`,
    );
    try {
      const r = await varco("--policy", join(d, "gateway.yaml"), "user", "totp", "enroll", "root1");
      expect(r.stderr).toBe("");
      expect(r.exitCode).toBe(0);
      const files = readdirSync(state);
      expect(files).toEqual(expect.arrayContaining(["state.db", "totp.key"]));
      for (const f of files) expect([f, statSync(join(state, f)).uid]).toEqual([f, 65534]);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe("user hash", () => {
  /**
   * Runs `varco user hash` on a pseudo-terminal (script(1)) and types each of `lines` once its prompt
   * (`password:`, then `again:`) is on the screen, as a person would: a line typed before the program
   * turned echo off is echoed by the terminal itself (on a loaded machine that once failed this test).
   */
  const onTerminal = async (lines: readonly string[]) => {
    const child = execa("script", ["-qec", `node ${join(ROOT, "bin/varco.mjs")} user hash`, "/dev/null"], { reject: false });
    let screen = "";
    child.stdout?.on("data", (d: Buffer) => {
      screen += d.toString();
    });
    const prompts = ["password:", "again:"];
    for (const [i, l] of lines.entries()) {
      const prompt = prompts[i] ?? "";
      for (let t = 0; t < 300 && !screen.includes(prompt); t++) await new Promise((r) => setTimeout(r, 100));
      // The prompt comes after readline put the terminal in raw mode (echo off); a little slack anyway.
      await new Promise((r) => setTimeout(r, 200));
      child.stdin?.write(`${l}\n`);
    }
    setTimeout(() => child.stdin?.end(), 3000);
    return child;
  };

  it("asks twice without echo on a terminal and prints a hash of what was typed", async () => {
    const r = await onTerminal(["S3cret-pw", "S3cret-pw"]);
    expect(r.stdout).not.toContain("S3cret-pw");
    const hash = /\$argon2id\$\S+/.exec(r.stdout)?.[0];
    expect(hash).toBeDefined();
    const { verify } = await import("argon2");
    expect(await verify(hash as string, "S3cret-pw")).toBe(true);
  });

  it("prints nothing when the two answers differ", async () => {
    const r = await onTerminal(["S3cret-pw", "S3cret-px"]);
    expect(r.stdout).not.toContain("$argon2id$");
    expect(r.stdout).toContain("the two passwords differ");
  });

  it("still reads stdin for scripts", async () => {
    const r = await execa("node", [join(ROOT, "bin/varco.mjs"), "user", "hash"], { input: "pw-from-file\n", reject: false });
    const { verify } = await import("argon2");
    expect(await verify(r.stdout.trim(), "pw-from-file")).toBe(true);
  });
});

describe("keys", () => {
  const keysPolicy = (d: string) => {
    writeFileSync(
      join(d, "gateway.yaml"),
      `version: 1
gateway: { listen: ["127.0.0.1:0"], state_dir: state, host_keys: [keys/host_ed25519], egress_key: keys/egress_ed25519 }
directory: { local_users: [ { uid: root1, password_hash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA" } ] }
targets: { vm1: { host: 192.0.2.1, host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz" } }
routes: [ { users: [root1], alias: vm1, target: vm1 } ]
`,
    );
    return join(d, "gateway.yaml");
  };

  it("are never generated silently: serve refuses without them and names `varco keys init`, which makes them once", async () => {
    const d = mkdtempSync(join(tmpdir(), "varco-keys-"));
    try {
      const file = keysPolicy(d);
      const serve = await varco("--policy", file, "serve");
      expect(serve.exitCode).toBe(1);
      expect(serve.stderr).toContain(
        `gateway.host_keys: ${join(d, "keys/host_ed25519")} does not exist: create the keys with \`varco keys init\``,
      );
      expect(existsSync(join(d, "keys/host_ed25519"))).toBe(false);
      const init = await varco("--policy", file, "keys", "init", "--json");
      expect(init.exitCode).toBe(0);
      const made = JSON.parse(init.stdout).keys as Array<{ role: string; created: boolean; public_key: string }>;
      expect(made.map((k) => [k.role, k.created])).toEqual([
        ["host_key", true],
        ["egress_key", true],
      ]);
      expect(statSync(join(d, "keys/host_ed25519")).mode & 0o777).toBe(0o600);
      const again = JSON.parse((await varco("--policy", file, "keys", "init", "--json")).stdout).keys as typeof made;
      expect(again.map((k) => k.created)).toEqual([false, false]);
      expect(again.map((k) => k.public_key)).toEqual(made.map((k) => k.public_key));
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it.runIf(process.getuid?.() === 0)("made by root in the service user's key folder belong to that user", async () => {
    const d = mkdtempSync(join(tmpdir(), "varco-keys-own-"));
    try {
      const file = keysPolicy(d);
      mkdirSync(join(d, "keys"), { mode: 0o700 });
      chownSync(join(d, "keys"), 65534, 65534);
      expect((await varco("--policy", file, "keys", "init")).exitCode).toBe(0);
      for (const f of readdirSync(join(d, "keys"))) expect([f, statSync(join(d, "keys", f)).uid]).toEqual([f, 65534]);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe("log format", () => {
  const serveOnce = async (args: readonly string[], env: NodeJS.ProcessEnv = {}) => {
    const d = mkdtempSync(join(tmpdir(), "varco-logs-"));
    writeFileSync(
      join(d, "gateway.yaml"),
      `version: 1
gateway: { listen: ["127.0.0.1:0"], state_dir: state, host_keys: [keys/host], egress_key: keys/egress }
directory: { local_users: [ { uid: root1, password_hash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA" } ] }
targets: { vm1: { host: 192.0.2.1, host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz" } }
routes: [ { users: [root1], alias: vm1, target: vm1 } ]
`,
    );
    const policyFile = join(d, "gateway.yaml");
    await varco("--policy", policyFile, "keys", "init");
    const child = execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", policyFile, ...args, "serve"], {
      reject: false,
      all: true,
      env,
    });
    let out = "";
    child.all?.on("data", (b: Buffer) => {
      out += b.toString();
    });
    for (let i = 0; i < 200 && !out.includes("gateway listening") && child.exitCode === null; i++)
      await new Promise((r) => setTimeout(r, 50));
    child.kill("SIGTERM");
    await child;
    rmSync(d, { recursive: true, force: true });
    return out;
  };

  it("is JSON lines when not on a terminal, and readable lines with --log-format pretty (or VARCO_LOG_FORMAT)", async () => {
    const json = await serveOnce([]);
    const first = json.split("\n").find((l) => l.includes("gateway listening")) ?? "";
    expect(JSON.parse(first)).toMatchObject({ msg: "gateway listening", name: "varco" });
    for (const pretty of [await serveOnce(["--log-format", "pretty"]), await serveOnce([], { VARCO_LOG_FORMAT: "pretty" })]) {
      const line = pretty.split("\n").find((l) => l.includes("gateway listening")) ?? "";
      expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(varco\/\d+\): gateway listening$/);
    }
    const bad = await varco("--log-format", "xml", "serve");
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain("Allowed choices are pretty, json");
  });
});

describe("policy check", () => {
  it("refuses what serve refuses: a policy file others may write", async () => {
    const d = mkdtempSync(join(tmpdir(), "varco-check-"));
    try {
      const file = join(d, "gateway.yaml");
      copyFileSync(policy, file);
      expect((await varco("policy", "check", file)).exitCode).toBe(0);
      chmodSync(file, 0o666);
      const r = await varco("policy", "check", file);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain(`${file}:1:1: ${file}: mode 0666 is writable by group or others`);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it("prints notes on a valid policy and still exits 0 (text and --json)", async () => {
    const d = mkdtempSync(join(tmpdir(), "varco-check-"));
    try {
      const file = join(d, "gateway.yaml");
      writeFileSync(
        file,
        readFileSync(policy, "utf8").replace("allow: { port_forwarding: true }", "allow: { port_forwarding: true, scp: false }"),
        {
          mode: 0o600,
        },
      );
      const r = await varco("policy", "check", file);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`${file}:\\d+:\\d+: note: allow\\.exec is true, so allow\\.scp: false`));
      const j = await varco("policy", "check", "--json", file);
      expect(j.exitCode).toBe(0);
      expect((JSON.parse(String(j.stdout)) as { notes: Array<{ message: string }> }).notes[0]?.message).toMatch(/allow\.scp: false/);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
