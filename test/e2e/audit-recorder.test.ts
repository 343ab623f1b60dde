/**
 * No way around the recorder, end to end through the real OpenSSH client and gateway:
 * max_bytes reached by output or by recorded input terminates the session (the default
 * on_recording_failure), and file operations of the real `sftp` client (mkdir, put, rename by
 * posix-rename and the legacy request, symlink, hardlink, chmod, rm, rmdir) are audited with their paths.
 */
import { randomBytes } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closedSessionOf, type Harness, startHarness, TEST_ROUTES } from "../helpers/harness.ts";

let h: Harness;

const ROUTES = `${TEST_ROUTES}
  - groups: [testers]
    alias: cap
    target: vm1-mario
    record: { max_bytes: 4KiB }
  - groups: [testers]
    alias: capin
    target: vm1-mario
    record: { input: true, max_bytes: 4KiB }
  - groups: [testers]
    alias: capgo
    target: vm1-mario
    record: { max_bytes: 4KiB, on_recording_failure: continue }
`;

beforeAll(async () => {
  h = await startHarness({ extraUsers: ["r01", "r02", "r03", "r04"], extraRoutes: ROUTES });
});

afterAll(async () => {
  await h?.stop();
});

/** The newest session of `uid`, once closed, as `varco audit show --json` prints it. */
const closedSession = (uid: string) => closedSessionOf(h.env.policyFile, uid);

/** The status of the newest session's first recording once it is no longer open (closed after the session row, bounded wait). */
async function recordingStatus(uid: string): Promise<string | undefined> {
  let status: string | undefined;
  for (let i = 0; i < 100; i++) {
    status = (await closedSession(uid)).recordings[0]?.status;
    if (status !== "open") return status;
    await new Promise((r) => setTimeout(r, 100));
  }
  return status;
}

describe("max_bytes", () => {
  it("terminates a session whose output reaches max_bytes (on_recording_failure: terminate by default)", {
    timeout: 45_000,
  }, async ({ onTestFailed }) => {
    onTestFailed(() =>
      console.log(
        h
          .gatewayOutput()
          .split("\n")
          .filter((l) => l.includes("r01") || /"level":[45]0/.test(l))
          .join("\n")
          .slice(-8000),
      ),
    );
    const r = await h.ssh("r01_cap", ["head -c 20000000 /dev/zero | tr '\\0' x"]);
    expect(r.exitCode).not.toBe(0);
    // The gateway writes "varco: recording limit reached …" to the channel's stderr before it
    // disconnects, but the OpenSSH client may exit on the DISCONNECT before printing it: not asserted.
    // Only what was in flight when the cap was reached passes unrecorded, not the 20 MB.
    expect(r.stdout.length).toBeLessThan(2 * 1024 * 1024);
    const s = await closedSession("r01");
    expect(s.session.result).toBe("terminated");
    expect(s.events.find((e) => e.type === "recording_failed")).toMatchObject({
      result: "terminate",
      data: { error: "max_bytes", reason: "max_bytes" },
    });
    expect(await recordingStatus("r01")).toBe("truncated");
  });

  it("terminates a session whose recorded input reaches max_bytes", async () => {
    const r = await h.ssh("r02_capin", ["cat > /dev/null; echo finished"], { input: randomBytes(4 * 1024 * 1024).toString("base64") });
    expect(r.exitCode).not.toBe(0);
    expect(r.stdout).not.toContain("finished");
    const s = await closedSession("r02");
    expect(s.session.result).toBe("terminated");
    expect(s.events.find((e) => e.type === "recording_failed")?.data).toMatchObject({ error: "max_bytes" });
    expect(await recordingStatus("r02")).toBe("truncated");
    // The bytes relayed upstream stay near the cap (paused, then cut), not the 5.5 MB sent.
    expect(Number(s.events.find((e) => e.type === "session_end")?.data.up_bytes)).toBeLessThan(1024 * 1024);
  });

  it("with on_recording_failure: continue, audits the limit and lets the command finish", async () => {
    const r = await h.ssh("r03_capgo", ["head -c 100000 /dev/zero | tr '\\0' x; echo; echo done"]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain("done");
    expect(r.stdout.length).toBeGreaterThan(100_000);
    const s = await closedSession("r03");
    expect(s.session.result).not.toBe("terminated");
    expect(s.events.find((e) => e.type === "recording_failed")).toMatchObject({ result: "continue", data: { error: "max_bytes" } });
  });
});

describe("sftp", () => {
  it("audits mkdir, open, rename (posix-rename and legacy), symlink, hardlink, chmod, rm and rmdir with their paths", async () => {
    const cm = await h.master("r04_vm1");
    const P = cm.map((o) => (o === "-p" ? "-P" : o));
    const remote = join(h.dir, "sftp-ops");
    const local = join(h.dir, "sftp-ops-local");
    mkdirSync(remote, { recursive: true });
    mkdirSync(local, { recursive: true });
    writeFileSync(join(local, "f.bin"), randomBytes(3000));
    const batch = [
      `mkdir ${remote}/d`,
      `put ${local}/f.bin ${remote}/d/f`,
      `rename ${remote}/d/f ${remote}/d/g`,
      `rename -l ${remote}/d/g ${remote}/d/h`,
      `ln -s ${remote}/d/h ${remote}/d/sym`,
      `ln ${remote}/d/h ${remote}/d/hard`,
      `chmod 600 ${remote}/d/h`,
      `rm ${remote}/d/hard`,
      `mkdir ${remote}/gone`,
      `rmdir ${remote}/gone`,
    ].join("\n");
    const r = await execa("sftp", ["-b", "-", ...P, "r04_vm1@127.0.0.1"], { input: `${batch}\n`, reject: false });
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(lstatSync(`${remote}/d/sym`).isSymbolicLink()).toBe(true);
    expect(existsSync(`${remote}/d/hard`)).toBe(false);
    await execa("ssh", [...cm, "-O", "exit", "r04_vm1@127.0.0.1"], { reject: false });

    const s = await closedSession("r04");
    const files = s.events.filter((e) => e.type === "file").map((e) => e.data);
    const ops = (op: string) => files.filter((d) => d.protocol === "sftp" && d.op === op);
    expect(ops("mkdir").map((d) => d.path)).toEqual([`${remote}/d`, `${remote}/gone`]);
    expect(ops("open")).toContainEqual(
      expect.objectContaining({ path: `${remote}/d/f`, ok: true, flags: expect.stringContaining("write") }),
    );
    expect(ops("close")).toContainEqual(expect.objectContaining({ path: `${remote}/d/f`, bytes_written: 3000 }));
    expect(ops("rename").map((d) => [d.path, d.to_path, d.ok])).toEqual([
      [`${remote}/d/f`, `${remote}/d/g`, true],
      [`${remote}/d/g`, `${remote}/d/h`, true],
    ]);
    expect(ops("symlink")).toEqual([expect.objectContaining({ path: `${remote}/d/h`, to_path: `${remote}/d/sym`, ok: true })]);
    expect(ops("hardlink")).toEqual([expect.objectContaining({ path: `${remote}/d/h`, to_path: `${remote}/d/hard`, ok: true })]);
    expect(ops("setstat").map((d) => d.path)).toContain(`${remote}/d/h`);
    expect(ops("remove").map((d) => d.path)).toEqual([`${remote}/d/hard`]);
    expect(ops("rmdir").map((d) => d.path)).toEqual([`${remote}/gone`]);
    expect(s.events.filter((e) => e.type === "transfer_unparsed")).toEqual([]);
  });
});
