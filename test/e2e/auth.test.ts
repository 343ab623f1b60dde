/**
 * Authentication in depth with the real gateway, a real slapd and the real OpenSSH client:
 * enrolment inside the login, recovery codes, lockout and unlock, publickey + TOTP, break-glass
 * local users, pre-auth limits (a flood from one source does not starve another).
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import type ssh2 from "ssh2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openAuditStore } from "../../src/audit/index.ts";
import { currentCode, hashPassword } from "../../src/auth/index.ts";
import { PASSWORD_PROMPT } from "../../src/ssh/index.ts";
import { type Harness, ROOT, ssh2LoginAt, startHarness } from "../helpers/harness.ts";

let h: Harness;
let dir: string;
const TOTP = { issuer: "varco", digits: 6 as const, periodMs: 30_000, window: 1 };
const BREAK_GLASS_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "varco-auth-"));
  mkdirSync(join(dir, "secrets"), { recursive: true, mode: 0o700 });
  mkdirSync(join(dir, "userkeys"), { recursive: true });
  writeFileSync(join(dir, "secrets/admin.totp"), `${BREAK_GLASS_SECRET}\n`, { mode: 0o600 });
  await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "k05")]);
  writeFileSync(join(dir, "userkeys/k05.pub"), readFileSync(join(dir, "k05.pub")));
  const hash = await hashPassword("break-glass-pw");
  h = await startHarness({
    dir,
    extraUsers: ["k01", "k02", "k03", "k04", "k05", "k06", "k07"],
    unenrolled: ["k01", "k02"],
    templateEdit: (t) =>
      t
        .replace(
          "  chains: [[password, totp]]",
          '  chains: [[password, totp], [publickey, totp]]\n  totp: { enrol_on_first_login: true }\n  publickey: { keys_file: "userkeys/{uid}.pub" }',
        )
        .replace(
          "  lockout: { max_failures_per_source: 1000 }",
          "  lockout: { max_failures: 3, within: 15m, lock_for: 15m, max_failures_per_source: 1000 }",
        )
        .replace(
          "    timeout: 5s\n",
          `    timeout: 5s\n  local_users:\n    - { uid: admin.local, password_hash: "${hash}", totp_secret_file: secrets/admin.totp, groups: [testers] }\n`,
        )
        .replace(
          /limits: \{[^}]*\}/,
          "limits: { max_unauthenticated: 20, max_unauthenticated_per_source: 5, login_grace: 3s, idle_timeout: 1h }",
        ),
  });
});

afterAll(async () => {
  if (process.env.DEBUG_GW)
    console.log(
      h
        ?.gatewayOutput()
        .split("\n")
        .filter((l) => l.includes('"msg"'))
        .map((l) => {
          try {
            const j = JSON.parse(l);
            return `${j.msg} ${j.reason ?? ""} ${j.account ?? ""} ${j.err ?? ""}`;
          } catch {
            return l;
          }
        })
        .join("\n"),
    );
  await h?.stop();
});

const events = (type: string) => {
  const store = openAuditStore(join(dir, "state/audit.db"));
  const out = store.allEvents().filter((e) => e.type === type);
  store.close();
  return out;
};

/** Logs in with the ssh2 library, answering prompts with `answer(prompt, instructions)`. */
const ssh2Login = (account: string, answer: (prompt: string, instructions: string) => string) => ssh2LoginAt(h.port, account, answer);

const execOver = (c: InstanceType<typeof ssh2.Client>, cmd: string) =>
  new Promise<string>((resolve, reject) =>
    c.exec(cmd, (err, ch) => {
      if (err) return reject(err);
      let out = "";
      ch.on("data", (d: Buffer) => {
        out += d.toString();
      });
      ch.on("close", () => resolve(out));
    }),
  );

/** An enrolment invitation from the CLI, as an administrator would issue it. */
async function invite(uid: string): Promise<string> {
  const r = await execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, "user", "totp", "invite", uid, "--json"]);
  return (JSON.parse(r.stdout) as { code: string }).code;
}

describe("enrolment on first login", () => {
  it("asks for the invitation, shows a QR code and the otpauth URI, confirms with a code, then gives recovery codes", async () => {
    const invitation = await invite("k01");
    let secret = "";
    let recovery: string[] = [];
    let qrSeen = false;
    const c = await ssh2Login("k01_vm1", (prompt, instructions) => {
      if (prompt === PASSWORD_PROMPT) return "k01-pw";
      if (instructions.includes("otpauth://")) {
        qrSeen = instructions.includes("█") || instructions.includes("▀") || instructions.includes("▄");
        secret = /secret=([A-Z2-7]+)/.exec(instructions)?.[1] ?? "";
        return currentCode(TOTP, secret, Date.now());
      }
      if (instructions.includes("recovery codes")) {
        recovery = instructions.match(/[0-9a-z]{4}(?:-[0-9a-z]{4}){3}/g) ?? [];
        return "";
      }
      return invitation;
    });
    expect(await execOver(c, "echo enrolled")).toBe("enrolled\n");
    c.end();
    expect(qrSeen).toBe(true);
    expect(secret).toMatch(/^[A-Z2-7]{32}$/);
    expect(recovery).toHaveLength(10);
    expect(events("enrolled").some((e) => e.uid === "k01")).toBe(true);

    // The enrolled secret now works with the stock OpenSSH client, and so does a recovery code, once.
    const next = currentCode(TOTP, secret, Date.now() + 30_000);
    const r = await h.ssh("k01_vm1", ["echo with-totp"], { code: next });
    expect(r.stdout).toBe("with-totp\n");
    const rc = await h.ssh("k01_vm1", ["echo with-recovery"], { code: recovery[0] });
    expect(rc.stdout).toBe("with-recovery\n");
    const again = await h.ssh("k01_vm1", ["echo replayed"], { code: recovery[0] });
    expect(again.exitCode).toBe(255);
    expect(events("recovery_code_used").filter((e) => e.uid === "k01")).toHaveLength(1);
    // The invitation was single use.
    const reuse = ssh2Login("k01_vm1", (prompt) => (prompt === PASSWORD_PROMPT ? "k01-pw" : invitation));
    await expect(reuse).rejects.toThrow(/authentication methods failed/);
  });

  it("without an invitation the password alone shows no QR code; a wrong confirmation code stores nothing", async () => {
    let offered = false;
    await expect(
      ssh2Login("k02_vm1", (prompt, instructions) => {
        offered ||= instructions.includes("otpauth://");
        return prompt === PASSWORD_PROMPT ? "k02-pw" : "000000";
      }),
    ).rejects.toThrow(/authentication methods failed/);
    expect(offered).toBe(false);
    const invitation = await invite("k02");
    await expect(
      ssh2Login("k02_vm1", (prompt, instructions) => {
        if (prompt === PASSWORD_PROMPT) return "k02-pw";
        return instructions.includes("otpauth://") ? "000000" : invitation;
      }),
    ).rejects.toThrow(/authentication methods failed/);
    // The invitation survives a wrong confirmation code: the next try enrols.
    const c = await ssh2Login("k02_vm1", (prompt, instructions) => {
      if (prompt === PASSWORD_PROMPT) return "k02-pw";
      const secret = /secret=([A-Z2-7]+)/.exec(instructions)?.[1];
      if (secret) return currentCode(TOTP, secret, Date.now());
      return instructions.includes("recovery codes") ? "" : invitation;
    });
    c.end();
  });
});

describe("lockout", () => {
  it("locks a uid after max_failures, refuses even the right credentials, and `varco user unlock` lifts it", async () => {
    for (let i = 0; i < 3; i++)
      await h.ssh("k03_vm1", ["true"], {
        password: "wrong",
        code: "000000",
        extra: ["-o", "NumberOfPasswordPrompts=1", "-o", "PreferredAuthentications=keyboard-interactive"],
      });
    const locked = await h.ssh("k03_vm1", ["echo in"], {
      code: currentCode(TOTP, h.env.secrets.get("k03") ?? "", Date.now()),
      extra: ["-o", "NumberOfPasswordPrompts=1", "-o", "PreferredAuthentications=keyboard-interactive"],
    });
    expect(locked.exitCode).toBe(255);
    expect(locked.stderr).toContain("Permission denied");
    expect(events("lock").some((e) => e.uid === "k03" && e.result === "uid_locked")).toBe(true);
    const u = await execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, "user", "unlock", "k03"], { reject: false });
    expect(u.exitCode).toBe(0);
    const ok = await h.ssh("k03_vm1", ["echo unlocked"]);
    expect(ok.stdout).toBe("unlocked\n");
    expect(events("unlock").some((e) => e.uid === "k03")).toBe(true);
  });
});

describe("publickey + totp", () => {
  it("accepts a user key from the keys file, then asks only for the code (partial success)", async () => {
    let asked: string[] = [];
    const askLog = join(dir, "asked.log");
    writeFileSync(askLog, "");
    const r = await execa(
      "ssh",
      [
        ...h.sshOptions(["-o", "PubkeyAuthentication=yes", "-i", join(dir, "k05"), "-o", "IdentitiesOnly=yes"]),
        "k05_vm1@127.0.0.1",
        "echo via-key",
      ],
      {
        reject: false,
        env: { ...h.askpassEnv("not-used", h.nextCode("k05")), VARCO_TEST_PASSWORD: "", VARCO_TEST_ASKPASS_LOG: askLog },
        stdin: "ignore",
      },
    );
    asked = readFileSync(askLog, "utf8").split("\n").filter(Boolean);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("via-key");
    expect(asked.length).toBeGreaterThan(0);
    expect(asked.every((a) => a.includes("Verification code:"))).toBe(true);
    const login = events("login").find((e) => e.uid === "k05");
    expect(login?.data?.factors).toEqual(["publickey", "totp"]);
  });

  it("refuses a key that is not the user's", async () => {
    const r = await execa(
      "ssh",
      [
        ...h.sshOptions(["-o", "PubkeyAuthentication=yes", "-i", join(dir, "k05"), "-o", "IdentitiesOnly=yes"]),
        "k06_vm1@127.0.0.1",
        "echo nope",
      ],
      {
        reject: false,
        env: { ...h.askpassEnv("wrong", "000000") },
        stdin: "ignore",
      },
    );
    expect(r.exitCode).toBe(255);
  });
});

describe("break-glass local user", () => {
  it("logs in with an argon2id password and TOTP from its secret file, audited as break-glass", async () => {
    const code = currentCode(TOTP, BREAK_GLASS_SECRET, Date.now());
    const r = await h.ssh("admin.local_vm1", ["echo glass"], { password: "break-glass-pw", code });
    expect(r.stdout).toBe("glass\n");
    expect(events("break_glass").some((e) => e.uid === "admin.local")).toBe(true);
    const wrong = await h.ssh("admin.local_vm1", ["true"], {
      password: "nope",
      code: currentCode(TOTP, BREAK_GLASS_SECRET, Date.now() + 30_000),
    });
    expect(wrong.exitCode).toBe(255);
  });
});

describe("pre-auth limits", () => {
  it("drops a flood of idle connections from one source and still serves a login from another", async () => {
    const sockets: Socket[] = [];
    const closed: boolean[] = [];
    for (let i = 0; i < 12; i++) {
      const s = connect({ host: "127.0.0.1", port: h.port, localAddress: "127.0.0.2" });
      const idx = i;
      closed[idx] = false;
      s.on("close", () => {
        closed[idx] = true;
      });
      s.on("error", () => undefined);
      s.resume(); // read the gateway's identification line, so its FIN is seen
      sockets.push(s);
    }
    // Bounded wait for the gateway to drop the ones over max_unauthenticated_per_source (5).
    for (let i = 0; i < 50 && closed.filter(Boolean).length < 7; i++) await new Promise((r) => setTimeout(r, 100));
    expect(closed.filter(Boolean).length).toBeGreaterThanOrEqual(7);
    const r = await h.ssh("k07_vm1", ["echo still-served"]);
    expect(r.stdout).toBe("still-served\n");
    // login_grace (3 s) closes the rest: bounded wait.
    for (let i = 0; i < 100 && closed.some((c) => !c); i++) await new Promise((r) => setTimeout(r, 100));
    expect(closed.every(Boolean)).toBe(true);
    for (const s of sockets) s.destroy();
  });
});

describe("reload rebuilds authentication", () => {
  it("a change that cannot apply live (listen) is refused as restart required, and the old policy stays", async () => {
    const good = readFileSync(h.env.policyFile, "utf8");
    writeFileSync(h.env.policyFile, good.replace(/listen: \["127\.0\.0\.1:\d+"\]/, 'listen: ["127.0.0.1:1"]'));
    expect(await h.reloadGateway()).toBe("refused");
    expect(h.gatewayOutput()).toMatch(/gateway\.listen changed: restart required/);
    writeFileSync(h.env.policyFile, good);
    expect(await h.reloadGateway()).toBe("reloaded");
    const r = await h.ssh("k04_vm1", ["echo still"]);
    expect(r.stdout).toBe("still\n");
  });

  it("removing a break-glass user and reloading refuses that user at once", async () => {
    // The break-glass test above ended with three wrong passwords: lift that lockout first.
    await execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, "user", "unlock", "admin.local"]);
    const before = await h.ssh("admin.local_vm1", ["echo glass"], {
      password: "break-glass-pw",
      code: currentCode(TOTP, BREAK_GLASS_SECRET, Date.now() + 30_000),
    });
    expect(before.stdout).toBe("glass\n");
    const good = readFileSync(h.env.policyFile, "utf8");
    writeFileSync(h.env.policyFile, good.replace(/ {2}local_users:\n {4}- \{ uid: admin\.local[^\n]*\n/, ""));
    expect(await h.reloadGateway()).toBe("reloaded");
    const after = await h.ssh("admin.local_vm1", ["echo glass"], {
      password: "break-glass-pw",
      code: currentCode(TOTP, BREAK_GLASS_SECRET, Date.now() + 60_000),
      extra: ["-o", "NumberOfPasswordPrompts=1", "-o", "PreferredAuthentications=keyboard-interactive"],
    });
    expect(after.exitCode).toBe(255);
    writeFileSync(h.env.policyFile, good);
    expect(await h.reloadGateway()).toBe("reloaded");
  });
});
