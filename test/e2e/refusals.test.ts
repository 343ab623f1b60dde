/**
 * Refusals with the real OpenSSH client: a missing or wrong factor, a replayed code, an unknown
 * user, and routes the user does not have. None of them may tell which factor failed.
 */
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openAuditStore } from "../../src/audit/index.ts";
import { type Harness, startHarness } from "../helpers/harness.ts";

let h: Harness;

beforeAll(async () => {
  h = await startHarness({ extraUsers: ["r01", "r02", "r03", "r04", "r05", "r06", "r07"] });
});

afterAll(async () => {
  await h?.stop();
});

/**
 * What an OpenSSH client shows for a refused login, with the user/host part removed. Whether the
 * client gives up first ("Permission denied (…)") or the server's max_auth_attempts closes first
 * ("Received disconnect") is a race at the 6th attempt, so that last line is normalised too.
 */
const denial = (stderr: string) =>
  stderr
    .replace(/[^\s]+@127\.0\.0\.1/g, "ACCOUNT")
    .replace(/^(ACCOUNT: Permission denied \(.*\)\.|Received disconnect from .*|Disconnected from .*)$/gm, "REFUSED")
    .replace(/(\nREFUSED)+/g, "\nREFUSED")
    .trim();

describe("the second factor is mandatory and failures look alike", () => {
  it("refuses a wrong password, a wrong code, a replayed code and an unknown user with the same message", async () => {
    const wrongPassword = await h.ssh("r01_vm1", ["true"], { password: "not-the-password" });
    const good = h.nextCode("r02");
    const wrongCode = await h.ssh("r02_vm1", ["true"], { code: good === "000000" ? "111111" : "000000" });
    const first = await h.ssh("r03_vm1", ["echo first"], { code: h.nextCode("r03") });
    expect(first.exitCode).toBe(0);
    const usedCode = h.nextCode("r03");
    const okAgain = await h.ssh("r03_vm1", ["echo second"], { code: usedCode });
    expect(okAgain.exitCode).toBe(0);
    const replay = await h.ssh("r03_vm1", ["echo replay"], { code: usedCode });
    const unknown = await h.ssh("nobody.here_vm1", ["true"], { password: "whatever", code: "123456" });
    const emptyPassword = await h.ssh("r04_vm1", ["true"], { password: "" });

    const all = [wrongPassword, wrongCode, replay, unknown, emptyPassword];
    for (const r of all) {
      expect(r.exitCode).toBe(255);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain("Permission denied");
      expect(denial(r.stderr)).toBe(denial(wrongPassword.stderr));
    }
  });

  it("audits every refused attempt with its reason (for admins, not for the client)", () => {
    const store = openAuditStore(`${h.dir}/state/audit.db`);
    const refused = store.allEvents().filter((e) => e.type === "login_refused");
    store.close();
    const reasons = new Set(refused.map((e) => `${e.uid}:${e.result}`));
    expect(reasons).toContain("r01:bad_password");
    expect(reasons).toContain("r02:bad_code");
    expect(reasons).toContain("r03:bad_code");
    expect(reasons).toContain("nobody.here:bad_password");
    expect(reasons).toContain("r04:bad_password");
  });
});

describe("routes", () => {
  it("refuses another user's alias after login and lists only the caller's aliases", async () => {
    const r = await h.ssh("mario.rossi_vm2", ["echo nope"]);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain('"mario.rossi_vm2" is not a route you may use');
    expect(r.stderr).toContain("mario.rossi_vm1");
    expect(r.stderr).toContain("mario.rossi_shared");
    const listed = r.stderr.split("one of:")[1] ?? "";
    expect(listed.trim().split(/\s+/)).toEqual(["mario.rossi_shared", "mario.rossi_vm1"]);
    expect(r.stderr).not.toContain("anna");
  });

  it("answers a user name without an alias with the list of aliases", async () => {
    const r = await h.ssh("r05", ["true"]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain("r05_vm1");
    expect(r.stderr).toContain("r05_vm2");
    expect(r.stderr).toContain("r05_noexec");
  });

  it("gives the same pre-auth answer for an alias that does not exist as for one that does", async () => {
    const existing = await h.ssh("r06_vm1", ["true"], { password: "wrong" });
    const missing = await h.ssh("r06_doesnotexist", ["true"], { password: "wrong" });
    expect(denial(existing.stderr)).toBe(denial(missing.stderr));
    expect(existing.exitCode).toBe(missing.exitCode);
  });

  it("refuses an interactive shell on a refused route the same way", async () => {
    const r = await execa("ssh", [...h.sshOptions(["-tt"]), "r07_vm9@127.0.0.1"], {
      reject: false,
      env: h.askpassEnv("r07-pw", h.nextCode("r07")),
      stdin: "ignore",
    });
    expect(r.exitCode).toBe(1);
    expect(String(r.stdout) + String(r.stderr)).toContain("r07_vm1");
  });
});
