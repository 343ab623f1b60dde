/**
 * Audit that auditors trust, end to end: recordings played back with the real asciinema CLI,
 * file transfers by sftp/scp/rsync in `varco audit show`, tampering caught by `varco audit verify`
 * (edits made with the sqlite3 CLI), kill -9 mid-session, and a full recordings disk (tmpfs).
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, ROOT, startHarness, TEST_ROUTES } from "../helpers/harness.ts";

const isRoot = process.getuid?.() === 0;
/** `asciinema cat` opens /dev/tty, so it runs under script(1). */
const asciinemaCat = (file: string) => execa(join(ROOT, "test/helpers/with-tty.sh"), ["asciinema", "cat", file], { reject: false });
let h: Harness;
let tmpfs: string;

const ROUTES = `${TEST_ROUTES}
  - groups: [testers]
    alias: fullterm
    target: vm1-mario
    record: { on_recording_failure: terminate }
  - groups: [testers]
    alias: fullcont
    target: vm1-mario
    record: { on_recording_failure: continue }
  - groups: [testers]
    alias: typed
    target: vm1-mario
    record: { input: true }
`;

beforeAll(async () => {
  h = await startHarness({
    extraUsers: ["a01", "a02", "a03", "a04", "a05", "a06", "a07", "a08"],
    extraRoutes: ROUTES,
  });
});

afterAll(async () => {
  if (tmpfs) await execa("umount", ["-l", tmpfs], { reject: false });
  await h?.stop();
});

const varco = (...args: string[]) => execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, ...args], { reject: false });

async function sessionsOf(uid: string): Promise<Array<{ id: string; result: string; account: string }>> {
  const r = await varco("audit", "list", "--json", "--user", uid);
  return (JSON.parse(String(r.stdout)) as { sessions: Array<{ id: string; result: string; account: string }> }).sessions;
}

async function waitSessionClosed(uid: string): Promise<{ id: string; result: string }> {
  for (let i = 0; i < 100; i++) {
    const [s] = await sessionsOf(uid);
    if (s && s.result !== "open") return s;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`session of ${uid} never closed`);
}

type Show = {
  session: { id: string; result: string };
  events: Array<{ type: string; data: Record<string, unknown> }>;
  recordings: Array<{ path: string; sha256: string; status: string; channel: number }>;
};
async function show(id: string): Promise<Show> {
  const r = await varco("audit", "show", id, "--json");
  expect(r.exitCode).toBe(0);
  return JSON.parse(String(r.stdout)) as Show;
}

describe("recordings", () => {
  it("records an interactive session in asciicast v2 that `asciinema cat` plays back", async () => {
    const r = await execa("ssh", [...h.sshOptions(["-tt"]), "a01_vm1@127.0.0.1"], {
      env: { ...h.askpassEnv("a01-pw", h.nextCode("a01")), TERM: "xterm" },
      input: "echo recorded-$((40+2))\nexit 3\n",
      reject: false,
    });
    expect(r.exitCode).toBe(3);
    const s = await waitSessionClosed("a01");
    const detail = await show(s.id);
    const rec = detail.recordings[0];
    expect(rec?.status).toBe("complete");
    expect(rec?.path).toMatch(/recordings\/\d{4}\/\d{2}\/\d{2}\/[0-9a-f-]+-1\.cast$/);
    const header = JSON.parse(readFileSync(rec?.path ?? "", "utf8").split("\n")[0] ?? "{}") as Record<string, unknown>;
    expect(header).toMatchObject({ version: 2, width: 80, height: 24 });
    const played = await asciinemaCat(rec?.path ?? "");
    expect(played.exitCode).toBe(0);
    expect(String(played.stdout)).toContain("recorded-42");
    // Input is not recorded unless the route asks for it.
    expect(readFileSync(rec?.path ?? "", "utf8")).not.toMatch(/,\s*"i",/);
    const replayed = await varco("audit", "replay", s.id.slice(0, 8), "--speed", "100");
    expect(replayed.exitCode).toBe(0);
    expect(String(replayed.stdout)).toContain("recorded-42");
  });

  it("records input only where the route says record.input", async () => {
    await execa("ssh", [...h.sshOptions(["-tt"]), "a02_typed@127.0.0.1"], {
      env: h.askpassEnv("a02-pw", h.nextCode("a02")),
      input: "echo typed-line\nexit\n",
      reject: false,
    });
    const s = await waitSessionClosed("a02");
    const rec = (await show(s.id)).recordings[0];
    expect(readFileSync(rec?.path ?? "", "utf8")).toMatch(/\[[\d.]+,\s*"i",\s*"echo typed-line/);
  });

  it("records a command without a pty (stdout and stderr)", async () => {
    const r = await h.ssh("a03_vm1", ["echo out-line; echo err-line >&2"]);
    expect(r.exitCode).toBe(0);
    const s = await waitSessionClosed("a03");
    const detail = await show(s.id);
    const text = readFileSync(detail.recordings[0]?.path ?? "", "utf8");
    expect(text).toContain("out-line");
    expect(text).toContain("err-line");
    expect(detail.events.find((e) => e.type === "exec")?.data.command).toBe("echo out-line; echo err-line >&2");
  });
});

describe("file transfers", () => {
  it("shows sftp, scp (both modes) and rsync transfers with paths and sizes", async () => {
    const cm = await h.master("a04_vm1");
    const P = cm.map((o) => (o === "-p" ? "-P" : o));
    const remote = join(h.dir, "xfer");
    mkdirSync(remote, { recursive: true });
    const sizes = { sftp: 70_001, scpNew: 80_002, scpOld: 90_003, rsync: 100_004 };
    for (const [name, size] of Object.entries(sizes)) writeFileSync(join(remote, `${name}.bin`), randomBytes(size));
    const local = join(h.dir, "local");
    mkdirSync(local, { recursive: true });
    writeFileSync(join(local, "up.bin"), randomBytes(12_345));

    expect(
      (
        await execa("sftp", ["-b", "-", ...P, "a04_vm1@127.0.0.1"], {
          input: `get ${remote}/sftp.bin ${local}/sftp.bin\nput ${local}/up.bin ${remote}/up-sftp.bin\n`,
          reject: false,
        })
      ).exitCode,
    ).toBe(0);
    expect((await execa("scp", [...P, `a04_vm1@127.0.0.1:${remote}/scpNew.bin`, `${local}/`], { reject: false })).exitCode).toBe(0);
    expect((await execa("scp", ["-O", ...P, `a04_vm1@127.0.0.1:${remote}/scpOld.bin`, `${local}/`], { reject: false })).exitCode).toBe(0);
    expect((await execa("scp", ["-O", ...P, `${local}/up.bin`, `a04_vm1@127.0.0.1:${remote}/`], { reject: false })).exitCode).toBe(0);
    expect(
      (await execa("rsync", ["-e", ["ssh", ...cm].join(" "), `a04_vm1@127.0.0.1:${remote}/rsync.bin`, `${local}/`], { reject: false }))
        .exitCode,
    ).toBe(0);
    await execa("ssh", [...cm, "-O", "exit", "a04_vm1@127.0.0.1"], { reject: false });

    const s = await waitSessionClosed("a04");
    const files = (await show(s.id)).events.filter((e) => e.type === "file").map((e) => e.data);
    const find = (pred: (d: Record<string, unknown>) => boolean) => files.find(pred);
    expect(find((d) => d.protocol === "sftp" && d.path === `${remote}/sftp.bin` && d.op === "close")).toMatchObject({
      bytes_read: sizes.sftp,
    });
    expect(find((d) => d.protocol === "sftp" && d.path === `${remote}/up-sftp.bin` && d.op === "close")).toMatchObject({
      bytes_written: 12_345,
    });
    expect(find((d) => d.protocol === "sftp" && d.path === `${remote}/scpNew.bin` && d.op === "close")).toMatchObject({
      bytes_read: sizes.scpNew,
    });
    expect(find((d) => d.protocol === "scp" && d.path === `${remote}/scpOld.bin`)).toMatchObject({ op: "download", size: sizes.scpOld });
    expect(find((d) => d.protocol === "scp" && d.path === `${remote}/up.bin`)).toMatchObject({ op: "upload", size: 12_345 });
    const rs = find((d) => d.protocol === "rsync");
    expect(String(rs?.path)).toContain(`${remote}/rsync.bin`);
    expect(Number(rs?.bytes_read)).toBeGreaterThan(sizes.rsync * 0.9);
    const text = await varco("audit", "show", s.id);
    expect(String(text.stdout)).toContain(`${remote}/scpOld.bin`);
    expect(String(text.stdout)).toContain(`${sizes.scpOld} bytes`);
  });
});

describe("durability", () => {
  it("closes a session cut by kill -9 as interrupted on the next start, with a readable recording", async () => {
    const child = execa("ssh", [...h.sshOptions(["-tt"]), "a05_vm1@127.0.0.1", "echo before-crash; sleep 60"], {
      env: h.askpassEnv("a05-pw", h.nextCode("a05")),
      reject: false,
      stdin: "ignore",
    });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("no output before crash")), 20_000);
      child.stdout?.on("data", (d: Buffer) => {
        if (d.toString().includes("before-crash")) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    await new Promise((r) => setTimeout(r, 300));
    h.signalGateway("SIGKILL");
    await child;
    await h.restartGateway();
    const s = await waitSessionClosed("a05");
    expect(s.result).toBe("interrupted");
    const rec = (await show(s.id)).recordings[0];
    expect(rec?.status).toBe("interrupted");
    const played = await asciinemaCat(rec?.path ?? "");
    expect(String(played.stdout)).toContain("before-crash");
    const verify = await varco("audit", "verify");
    expect(verify.stderr).toBe("");
    expect(verify.exitCode).toBe(0);
  });
});

describe("a transfer cut by kill -9", () => {
  it("leaves the OPEN of the file in the chain, and the session closes as interrupted", async () => {
    const local = join(h.dir, "big-upload.bin");
    writeFileSync(local, randomBytes(8 * 1024 * 1024));
    const remote = `${h.dir}/cut-by-crash.bin`;
    const batch = join(h.dir, "cut.batch");
    writeFileSync(batch, `put ${local} ${remote}\n`);
    // sftp -b runs in batch mode (no password prompts): log in once through a ControlMaster.
    const cm = (await h.master("a08_vm1")).map((o) => (o === "-p" ? "-P" : o));
    // -l 800: 800 Kbit/s, so the 8 MiB upload is still running when the gateway dies.
    const child = execa("sftp", ["-l", "800", "-b", batch, ...cm, "a08_vm1@127.0.0.1"], { reject: false, stdin: "ignore" });
    const opened = async () => {
      const [s] = await sessionsOf("a08");
      if (!s) return false;
      return (await show(s.id)).events.some((e) => e.type === "file" && e.data.op === "open" && e.data.path === remote);
    };
    let seen = false;
    for (let i = 0; i < 30 && !seen; i++) {
      seen = await opened();
      if (!seen) await new Promise((r) => setTimeout(r, 100));
    }
    expect(seen).toBe(true);
    h.signalGateway("SIGKILL");
    await child;
    await h.restartGateway();
    const s = await waitSessionClosed("a08");
    expect(s.result).toBe("interrupted");
    expect((await show(s.id)).events.some((e) => e.type === "file" && e.data.op === "open" && e.data.path === remote)).toBe(true);
  });
});

describe.runIf(isRoot)("a full recordings disk (tmpfs of 256 KiB)", () => {
  beforeAll(async () => {
    tmpfs = join(h.dir, "tiny");
    mkdirSync(tmpfs, { recursive: true });
    await execa("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", tmpfs]);
    const policy = readFileSync(h.env.policyFile, "utf8").replace(
      "  state_dir: state\n",
      `  state_dir: state\n  recordings_dir: ${tmpfs}\n`,
    );
    writeFileSync(h.env.policyFile, policy);
    expect(await h.reloadGateway()).toBe("reloaded");
  });

  it("terminates the session when the route says terminate, and audits it", async () => {
    const r = await h.ssh("a06_fullterm", ["head -c 8000000 /dev/urandom | base64; echo never-finished"]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stdout).not.toContain("never-finished");
    const s = await waitSessionClosed("a06");
    expect(s.result).toBe("terminated");
    const ev = (await show(s.id)).events.find((e) => e.type === "recording_failed");
    expect(ev?.data).toMatchObject({ error: "ENOSPC" });
  });

  it("carries on when the route says continue, and audits the failure", async () => {
    const r = await h.ssh("a07_fullcont", [
      "head -c 3000000 /dev/zero | base64 | wc -c; head -c 3000000 /dev/urandom | base64 | tail -c 10; echo finished",
    ]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain("finished");
    const s = await waitSessionClosed("a07");
    expect(s.result).toBe("ok");
    const detail = await show(s.id);
    expect(detail.events.find((e) => e.type === "recording_failed")?.data).toMatchObject({ error: "ENOSPC" });
    expect(detail.recordings[0]?.status).toBe("failed");
  });
});

describe("tamper evidence", () => {
  it("`varco audit verify` passes on an untouched log", async () => {
    const r = await varco("audit", "verify");
    expect(r.stdout).toMatch(/^audit verify: ok \(\d+ events, \d+ sessions, \d+ recordings\)/);
    expect(r.exitCode).toBe(0);
  });

  it("names a recording whose file was edited", async () => {
    const [s] = await sessionsOf("a01");
    const rec = (await show(s?.id ?? "")).recordings[0];
    const path = rec?.path ?? "";
    const original = readFileSync(path);
    writeFileSync(path, original.toString().replace("recorded-42", "recorded-43"));
    const r = await varco("audit", "verify");
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`FAILED at recording ${s?.id}-1`);
    writeFileSync(path, original);
    expect((await varco("audit", "verify")).exitCode).toBe(0);
  });

  it("names the first event row edited with the sqlite3 CLI", async () => {
    const db = join(h.dir, "state/audit.db");
    const row = await execa("sqlite3", [db, "SELECT id FROM events WHERE type = 'exec' ORDER BY id LIMIT 1"]);
    const id = String(row.stdout).trim();
    const original = String((await execa("sqlite3", [db, `SELECT hex(data) FROM events WHERE id = ${id}`])).stdout).trim();
    await execa("sqlite3", [db, `UPDATE events SET data = json_set(data, '$.command', 'true') WHERE id = ${id}`]);
    const r = await varco("audit", "verify");
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`FAILED at event ${id}: the event's content does not match its hash`);
    await execa("sqlite3", [db, `UPDATE events SET data = CAST(x'${original}' AS TEXT) WHERE id = ${id}`]);
    expect((await varco("audit", "verify")).exitCode).toBe(0);
  });

  it("names a session row edited to hide its bytes", async () => {
    const db = join(h.dir, "state/audit.db");
    const [s] = await sessionsOf("a03");
    await execa("sqlite3", [db, `UPDATE sessions SET down_bytes = 0 WHERE id = '${s?.id}'`]);
    const r = await varco("audit", "verify");
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`FAILED at session ${s?.id}: the session row differs from its chained session_end event`);
  });
});
