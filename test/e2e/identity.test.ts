/**
 * One canonical identity, through the real OpenSSH client (and the ssh2 client where a prompt's
 * instructions must be read), a real slapd and the real gateway: spellings of a uid that the
 * directory matches case-insensitively are one user for TOTP, enrolment, lockout, routes and audit;
 * names that are not uids never reach the directory; unauthenticated work is bounded.
 */
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openAuditStore } from "../../src/audit/index.ts";
import { currentCode } from "../../src/auth/index.ts";
import { PASSWORD_PROMPT } from "../../src/ssh/index.ts";
import { type Harness, ROOT, ssh2LoginAt, startHarness } from "../helpers/harness.ts";

const TOTP = { issuer: "varco", digits: 6 as const, periodMs: 30_000, window: 1 };
const BIN = join(ROOT, "bin/varco.mjs");
let h: Harness;

beforeAll(async () => {
  h = await startHarness({
    extraUsers: ["i01", "i02", "i03", "i04"],
    unenrolled: ["i02"],
    templateEdit: (t) =>
      t
        .replace("  chains: [[password, totp]]", "  chains: [[password, totp], [publickey, totp]]\n  totp: { enrol_on_first_login: true }")
        .replace(
          "  lockout: { max_failures_per_source: 1000 }",
          "  lockout: { max_failures: 3, within: 15m, lock_for: 15m, max_failures_per_source: 1000 }",
        )
        .replace(/limits: \{([^}]*)\}/, "limits: {$1, max_channels: 3 }"),
  });
});

afterAll(async () => {
  await h?.stop();
});

const events = (type?: string) => {
  const store = openAuditStore(join(h.dir, "state/audit.db"));
  const out = store.allEvents().filter((e) => type === undefined || e.type === type);
  store.close();
  return out;
};
/** The newest login_refused row once it is committed (refusals are written in one transaction per tick). */
async function lastRefusal(matching: (e: ReturnType<typeof events>[number]) => boolean) {
  for (let i = 0; i < 40; i++) {
    const row = events("login_refused").at(-1);
    if (row && matching(row)) return row;
    await new Promise((r) => setTimeout(r, 50));
  }
  return events("login_refused").at(-1);
}
const KBD_ONLY = ["-o", "PreferredAuthentications=keyboard-interactive", "-o", "NumberOfPasswordPrompts=1"];

/** Logs in with the ssh2 library, answering prompts with `answer(prompt, instructions)`. */
const ssh2Login = (account: string, answer: (prompt: string, instructions: string) => string) => ssh2LoginAt(h.port, account, answer);

describe("spellings of a uid are one identity", () => {
  it("MARIO.ROSSI is mario.rossi: his code, his routes, his uid in the audit and on the target", async () => {
    const r = await h.ssh("MARIO.ROSSI_vm1", ["echo in"], { password: "mario-demo-pw", code: h.nextCode("mario.rossi") });
    expect(r.stdout).toBe("in\n");
    const login = events("login").at(-1);
    expect(login?.uid).toBe("mario.rossi");
    expect(login?.account).toBe("MARIO.ROSSI_vm1");
    expect(events("session_start").at(-1)?.uid).toBe("mario.rossi");
    // A group route, reached with yet another spelling.
    const g = await h.ssh("Mario.Rossi_shared", ["echo shared"], { password: "mario-demo-pw", code: h.nextCode("mario.rossi") });
    expect(g.stdout).toBe("shared\n");
  });

  it("a code used as anna.bianchi is refused as Anna.Bianchi in the same step", async () => {
    const code = h.nextCode("anna.bianchi");
    const first = await h.ssh("anna.bianchi_vm2", ["echo first"], { code });
    expect(first.stdout).toBe("first\n");
    const replay = await h.ssh("Anna.Bianchi_vm2", ["echo replay"], { password: "anna-demo-pw", code, extra: KBD_ONLY });
    expect(replay.exitCode).toBe(255);
    expect(await lastRefusal((e) => e.account === "Anna.Bianchi_vm2")).toMatchObject({ uid: "anna.bianchi", result: "bad_code" });
  });

  it("a wrong password sent by the password method is not told apart: the code is asked next", async () => {
    const askLog = join(h.dir, "pwmethod-asked.log");
    writeFileSync(askLog, "");
    const r = await h.ssh("i01_vm1", ["true"], {
      password: "wrong",
      code: "000000",
      extra: ["-o", "PreferredAuthentications=password,keyboard-interactive", "-o", "NumberOfPasswordPrompts=1"],
      env: { VARCO_TEST_PASSWORD_METHOD: "1", VARCO_TEST_ASKPASS_LOG: askLog },
    });
    expect(r.exitCode).toBe(255);
    const asked = readFileSync(askLog, "utf8").trim().split("\n");
    // The password method, then (partial success) only the code: never a second password prompt.
    expect(asked[0]).toContain("'s password:");
    expect(asked[1]).toContain("Verification code:");
    expect(asked.some((a) => a.includes("Password:"))).toBe(false);
    expect(await lastRefusal((e) => e.uid === "i01")).toMatchObject({ uid: "i01", result: "bad_password" });
  });

  it("with enrolment on, the password alone under another spelling is never offered a QR code", async () => {
    let offered = false;
    const attempt = ssh2Login("I01_vm1", (prompt, instructions) => {
      if (instructions.includes("otpauth://")) {
        offered = true;
        const secret = /secret=([A-Z2-7]+)/.exec(instructions)?.[1] ?? "";
        return currentCode(TOTP, secret, Date.now());
      }
      return prompt === PASSWORD_PROMPT ? "i01-pw" : "";
    });
    await expect(attempt).rejects.toThrow(/authentication methods failed/);
    expect(offered).toBe(false);
    expect(events("enrolled")).toHaveLength(0);
  });

  it("failures under three spellings lock the one uid; the right credentials are then refused", async () => {
    for (const name of ["I03_vm1", "i03_vm1", "I03_vm2"]) {
      const r = await h.ssh(name, ["true"], { password: "wrong", code: "000000", extra: KBD_ONLY });
      expect(r.exitCode).toBe(255);
    }
    expect(events("lock").some((e) => e.uid === "i03" && e.result === "uid_locked")).toBe(true);
    const right = await h.ssh("i03_vm1", ["echo in"], { extra: KBD_ONLY });
    expect(right.exitCode).toBe(255);
    const u = await execa("node", [BIN, "--policy", h.env.policyFile, "user", "unlock", "I03"], { reject: false });
    expect(u.exitCode).toBe(0);
    const after = await h.ssh("i03_vm1", ["echo unlocked"]);
    expect(after.stdout).toBe("unlocked\n");
  });

  it("once locked, further attempts add no audit row each", async () => {
    for (let i = 0; i < 3; i++) await h.ssh("i04_vm1", ["true"], { password: "wrong", code: "000000", extra: KBD_ONLY });
    expect(events("lock").some((e) => e.uid === "i04")).toBe(true);
    // Refusals are committed once per tick: let the last one land before counting.
    await new Promise((r) => setTimeout(r, 300));
    const before = events("login_refused").length;
    for (let i = 0; i < 5; i++) await h.ssh("i04_vm1", ["true"], { password: "wrong", code: "000000", extra: KBD_ONLY });
    await new Promise((r) => setTimeout(r, 300));
    expect(events("login_refused").length).toBe(before);
  });
});

describe("names that are not uids never reach the directory", () => {
  it.each([[" mario.rossi_vm1"], ["mario.rossi _vm1"], ["mario.rossi\t_vm1"], ["mario.rossi_vm1_"], ["mario.rossi*_vm1"]])(
    "%j is refused as account_syntax",
    async (name) => {
      const r = await h.ssh(name, ["echo in"], { password: "mario-demo-pw", code: "000000", extra: KBD_ONLY });
      expect(r.exitCode).toBe(255);
      expect(await lastRefusal((e) => e.account === name)).toMatchObject({ result: "account_syntax" });
    },
  );

  it("a 10 000-byte name is refused and stored as at most 256 bytes", async () => {
    const name = `${"a".repeat(10_000)}_vm1`;
    await expect(ssh2Login(name, () => "x")).rejects.toThrow();
    const row = await lastRefusal((e) => (e.account ?? "").startsWith("aaaa"));
    expect(row?.result).toBe("account_too_long");
    expect(Buffer.byteLength(row?.account ?? "")).toBeLessThanOrEqual(256);
    expect(Buffer.byteLength(row?.uid ?? "")).toBeLessThanOrEqual(256);
  });
});

describe("bounded unauthenticated work", () => {
  it("public-key probes count: seven unknown keys end the connection before any password prompt", async () => {
    const keys: string[] = [];
    for (let i = 0; i < 7; i++) {
      const k = join(h.dir, `probe${i}`);
      await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", k]);
      keys.push("-i", k);
    }
    const askLog = join(h.dir, "probe-asked.log");
    writeFileSync(askLog, "");
    const r = await execa(
      "ssh",
      [...h.sshOptions(["-o", "PubkeyAuthentication=yes", "-o", "IdentitiesOnly=yes", ...keys]), "i01_vm1@127.0.0.1", "true"],
      { reject: false, env: { ...h.askpassEnv("i01-pw", "000000"), VARCO_TEST_ASKPASS_LOG: askLog }, stdin: "ignore" },
    );
    expect(r.exitCode).toBe(255);
    expect(readFileSync(askLog, "utf8")).toBe("");
  });

  it("max_channels bounds the channels of one connection", async () => {
    const c = await ssh2Login("anna.bianchi_vm2", (prompt) => (prompt === PASSWORD_PROMPT ? "anna-demo-pw" : h.nextCode("anna.bianchi")));
    const open = () =>
      new Promise<string>((resolve) =>
        c.exec("sleep 2; echo done", (err, ch) => {
          if (err) return resolve(`refused: ${err.message}`);
          let out = "";
          ch.on("data", (d: Buffer) => {
            out += d.toString();
          });
          ch.on("close", () => resolve(out));
        }),
      );
    const results = await Promise.all([open(), open(), open(), open()]);
    c.end();
    expect(results.filter((r) => r === "done\n")).toHaveLength(3);
    expect(results.filter((r) => r.startsWith("refused"))).toHaveLength(1);
  });
});

describe("the gateway's own hygiene", () => {
  it("does not warn that agent forwarding is unimplemented (it is implemented)", () => {
    expect(h.gatewayOutput()).not.toContain("not implemented yet");
  });

  it("refuses to start with a group-writable policy file", async () => {
    const copy = join(h.dir, "writable.yaml");
    writeFileSync(copy, readFileSync(h.env.policyFile, "utf8").replace(/listen: \["127\.0\.0\.1:\d+"\]/, 'listen: ["127.0.0.1:0"]'));
    chmodSync(copy, 0o664);
    const r = await execa("node", [BIN, "serve", "--policy", copy], { reject: false, timeout: 20_000 });
    expect(r.exitCode).not.toBe(0);
    expect(`${r.stdout}${r.stderr}`).toMatch(/writable/);
  });
});
