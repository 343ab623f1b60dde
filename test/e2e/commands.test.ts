/**
 * Permissions and recording follow what an exec command really runs, through the real OpenSSH
 * client: a transfer prefix in front of a shell (`scp -f x; id`, `rsync ; exec sh`) neither
 * passes as scp on an scp-only route nor escapes the terminal recording, while real `scp -O`
 * and `sftp -s /usr/lib/openssh/sftp-server` keep working on routes that allow only them.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closedSessionOf, type Harness, startHarness, TEST_ROUTES } from "../helpers/harness.ts";

let h: Harness;

const ROUTES = `${TEST_ROUTES}
  - groups: [testers]
    alias: scponly
    target: vm1-mario
    allow: { shell: false, exec: false, sftp: false, scp: true }
  - groups: [testers]
    alias: sftponly
    target: vm1-mario
    allow: { shell: false, exec: false, sftp: true, scp: false }
  - groups: [testers]
    alias: rec
    target: vm1-mario
`;

beforeAll(async () => {
  h = await startHarness({ extraUsers: ["c01", "c02", "c03"], extraRoutes: ROUTES });
});

afterAll(async () => {
  await h?.stop();
});

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
/** scp and sftp spell the port option -P. */
const forScp = (opts: string[]) => opts.map((o) => (o === "-p" ? "-P" : o));

/** The newest session of `uid`, once closed, as `varco audit show --json` prints it. */
const closedSession = (uid: string) => closedSessionOf(h.env.policyFile, uid);

describe("a route that allows scp but not exec", () => {
  it("refuses scp-prefixed shell commands and audits them, while scp -O up and down works", async () => {
    const cm = await h.master("c01_scponly");
    const account = "c01_scponly@127.0.0.1";
    const attacks = ["scp -f x; id", "scp -t /tmp && id", "scp -f /etc/hostname | id", "scp -t $(id)", "id"];
    for (const command of attacks) {
      const r = await execa("ssh", [...cm, account, command], { reject: false, stdin: "ignore" });
      expect(r.exitCode, command).not.toBe(0);
      expect(String(r.stdout), command).not.toContain("uid=");
      expect(String(r.stderr), command).toContain("varco: exec is not allowed on c01_scponly.");
    }

    const remote = join(h.dir, "scp-remote");
    const local = join(h.dir, "scp-local");
    mkdirSync(remote, { recursive: true });
    mkdirSync(local, { recursive: true });
    const down = randomBytes(70_001);
    const up = randomBytes(12_345);
    writeFileSync(join(remote, "down.bin"), down);
    writeFileSync(join(local, "up.bin"), up);
    const P = forScp(cm);
    const get = await execa("scp", ["-O", ...P, `${account}:${remote}/down.bin`, `${local}/`], { reject: false });
    expect(get.stderr).toBe("");
    expect(get.exitCode).toBe(0);
    const put = await execa("scp", ["-O", ...P, `${local}/up.bin`, `${account}:${remote}/`], { reject: false });
    expect(put.exitCode).toBe(0);
    expect(sha256(readFileSync(join(local, "down.bin")))).toBe(sha256(down));
    expect(sha256(readFileSync(join(remote, "up.bin")))).toBe(sha256(up));
    // The SFTP protocol (scp's default since OpenSSH 9.0) is not allowed here.
    expect((await execa("scp", [...P, `${account}:${remote}/down.bin`, `${local}/x.bin`], { reject: false })).exitCode).not.toBe(0);
    await execa("ssh", [...cm, "-O", "exit", account], { reject: false });

    const s = await closedSession("c01");
    const refused = s.events.filter((e) => e.type === "channel_refused");
    for (const command of attacks) {
      expect(refused.find((e) => e.data.command === command)?.data, command).toMatchObject({ kind: "exec", what: "exec" });
    }
    expect(s.events.filter((e) => e.type === "exec").map((e) => e.data.command)).toEqual([
      `scp -f ${remote}/down.bin`,
      `scp -t ${remote}/`,
    ]);
    const files = s.events.filter((e) => e.type === "file").map((e) => e.data);
    expect(files).toContainEqual(expect.objectContaining({ protocol: "scp", op: "download", path: `${remote}/down.bin`, size: 70_001 }));
    expect(files).toContainEqual(expect.objectContaining({ protocol: "scp", op: "upload", path: `${remote}/up.bin`, size: 12_345 }));
    // Transfers are not terminal recordings.
    expect(s.recordings).toEqual([]);
  });
});

describe("recording", () => {
  it("records a shell hidden behind an rsync prefix, with its output", async () => {
    const r = await h.ssh("c02_rec", ['rsync ; exec sh -c "echo marker-$((6*7))"'], { extra: ["-tt"] });
    expect(r.stdout).toContain("marker-42");
    const s = await closedSession("c02");
    expect(s.events.find((e) => e.type === "exec")?.data.command).toBe('rsync ; exec sh -c "echo marker-$((6*7))"');
    expect(s.recordings).toHaveLength(1);
    const cast = readFileSync(s.recordings[0]?.path ?? "", "utf8");
    // The command line (in the header) says marker-$((6*7)); only the output says marker-42.
    const output = cast
      .split("\n")
      .slice(1)
      .filter(Boolean)
      .map((l) => JSON.parse(l) as [number, string, string])
      .filter((e) => e[1] === "o")
      .map((e) => e[2])
      .join("");
    expect(output).toContain("marker-42");
  });
});

describe("a route that allows sftp but not exec", () => {
  it("runs the sftp-server binary as a command (sftp -s), audits its file operations, and refuses it with a shell after it", async () => {
    const cm = await h.master("c03_sftponly");
    const account = "c03_sftponly@127.0.0.1";
    const remote = join(h.dir, "sftp-remote");
    const local = join(h.dir, "sftp-local");
    mkdirSync(remote, { recursive: true });
    mkdirSync(local, { recursive: true });
    writeFileSync(join(remote, "get.bin"), randomBytes(40_000));
    writeFileSync(join(local, "put.bin"), randomBytes(5_000));
    const r = await execa("sftp", ["-s", "/usr/lib/openssh/sftp-server", "-b", "-", ...forScp(cm), account], {
      input: `get ${remote}/get.bin ${local}/get.bin\nput ${local}/put.bin ${remote}/put.bin\n`,
      reject: false,
    });
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    const bypass = await execa("ssh", [...cm, account, "/usr/lib/openssh/sftp-server; id"], { reject: false, stdin: "ignore" });
    expect(String(bypass.stdout)).not.toContain("uid=");
    expect(String(bypass.stderr)).toContain("varco: exec is not allowed on c03_sftponly.");
    await execa("ssh", [...cm, "-O", "exit", account], { reject: false });

    const s = await closedSession("c03");
    expect(s.events.find((e) => e.type === "exec")?.data.command).toBe("/usr/lib/openssh/sftp-server");
    const files = s.events.filter((e) => e.type === "file").map((e) => e.data);
    expect(files).toContainEqual(expect.objectContaining({ protocol: "sftp", op: "close", path: `${remote}/get.bin`, bytes_read: 40_000 }));
    expect(files).toContainEqual(
      expect.objectContaining({ protocol: "sftp", op: "close", path: `${remote}/put.bin`, bytes_written: 5_000 }),
    );
    expect(s.recordings).toEqual([]);
  });
});
