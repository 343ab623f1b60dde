/**
 * Output of commands without a terminal, end to end through the real OpenSSH client and gateway:
 * `record.exec_output: full` (the default) keeps stdout/stderr byte for byte in a `.raw` recording
 * whose hash is chained and checked by `audit verify`; `digest` keeps only sizes and SHA-256; `off`
 * nothing; a pty session is still an asciicast; `max_bytes` still ends a session, stderr counted too.
 */
import { createHash } from "node:crypto";
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RAW_STDERR, RAW_STDOUT, readRaw } from "../../src/audit/raw.ts";
import { closedSessionOf, type Harness, ROOT, startHarness, TEST_ROUTES } from "../helpers/harness.ts";

const isRoot = process.getuid?.() === 0;
let h: Harness;

const ROUTES = `${TEST_ROUTES}
  - groups: [testers]
    alias: dig
    target: vm1-mario
    record: { exec_output: digest, max_bytes: 4KiB }
  - groups: [testers]
    alias: off
    target: vm1-mario
    record: { exec_output: off }
  - groups: [testers]
    alias: rawcap
    target: vm1-mario
    record: { max_bytes: 64KiB }
`;

beforeAll(async () => {
  if (!isRoot) return;
  h = await startHarness({ extraUsers: ["w01", "w02", "w03", "w04", "w05", "w06", "w07"], extraRoutes: ROUTES });
}, 120_000);
afterAll(async () => {
  await h?.stop();
});

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const varco = (...args: string[]) =>
  execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, ...args], {
    reject: false,
    encoding: "buffer",
    stripFinalNewline: false,
  });

/** `ssh account@gateway command` without a pty, stdout and stderr kept as bytes. */
function sshBytes(uid: string, account: string, command: string) {
  return execa("ssh", [...h.sshOptions(), `${account}@127.0.0.1`, command], {
    env: h.askpassEnv(`${uid}-pw`, h.nextCode(uid)),
    reject: false,
    stdin: "ignore",
    encoding: "buffer",
    stripFinalNewline: false,
    maxBuffer: 256 * 1024 * 1024,
  });
}

/** The newest closed session of `uid`, its recordings no longer open (bounded wait: 30 s, for a loaded machine). */
async function settled(uid: string) {
  for (let i = 0; i < 300; i++) {
    const s = await closedSessionOf(h.env.policyFile, uid);
    if (s.recordings.every((r) => r.status !== "open") && s.events.some((e) => e.type === "session_end")) return s;
    await new Promise((r) => setTimeout(r, 100));
  }
  return closedSessionOf(h.env.policyFile, uid);
}

const concat = (frames: Array<{ code: number; data: Buffer }>, code: number) =>
  Buffer.concat(frames.filter((f) => f.code === code).map((f) => f.data));

describe.skipIf(!isRoot)("record.exec_output", () => {
  let fullPath = "";

  it("full (default): binary stdout and stderr are kept byte for byte, chained, replayed and verified", async () => {
    // 6 MB of random bytes (invalid UTF-8 throughout), more than one 4 MiB checkpoint, and a stderr line.
    const r = await sshBytes("w01", "w01_vm1", "head -c 6000000 /dev/urandom; printf 'err\\377line\\n' >&2");
    expect(r.exitCode).toBe(0);
    const got = Buffer.from(r.stdout);
    expect(got.length).toBe(6_000_000);
    const s = await settled("w01");
    expect(s.recordings).toHaveLength(1);
    const rec = s.recordings[0];
    expect(rec?.status).toBe("complete");
    expect(rec?.path).toMatch(/-1\.raw$/);
    fullPath = rec?.path ?? "";
    const { header, frames } = readRaw(fullPath);
    expect(header).toMatchObject({ varco_raw: 1, varco: { uid: "w01", kind: "exec" } });
    expect(sha(concat(frames, RAW_STDOUT))).toBe(sha(got));
    expect(concat(frames, RAW_STDERR)).toEqual(Buffer.from("err\xffline\n", "latin1"));
    // The file's hash and size are chained in the recording event; sizes per stream in exec_output.
    const chained = s.events.find((e) => e.type === "recording");
    expect(chained?.data).toMatchObject({ bytes: statSync(fullPath).size, sha256: sha(readFileSync(fullPath)) });
    expect(s.events.find((e) => e.type === "exec_output")?.data).toMatchObject({
      mode: "full",
      stdout_bytes: 6_000_000,
      stderr_bytes: 9,
    });
    expect(s.events.filter((e) => e.type === "recording_checkpoint").length).toBeGreaterThanOrEqual(1);
    // Replay writes the bytes back.
    const replayed = await varco("audit", "replay", s.session.id.slice(0, 8));
    expect(replayed.exitCode).toBe(0);
    expect(sha(Buffer.from(replayed.stdout))).toBe(sha(got));
    expect(Buffer.from(replayed.stderr).toString("latin1")).toBe("err\xffline\n");
    const verify = await varco("audit", "verify");
    expect(verify.exitCode, Buffer.from(verify.stdout).toString()).toBe(0);
    // Search does not choke on a binary recording.
    const search = await execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, "audit", "search", "line"], {
      reject: false,
      timeout: 20_000,
    });
    expect(search.exitCode).toBe(0);
    // The command line matches; the raw output is not indexed as recording text.
    expect(search.stdout).toContain("command");
    expect(search.stdout).not.toMatch(/\brecording\b/);
  }, 90_000);

  it("digest keeps only each stream's size and SHA-256 (max_bytes does not apply)", async () => {
    const r = await sshBytes("w02", "w02_dig", "head -c 300000 /dev/urandom; echo oops >&2");
    expect(r.exitCode).toBe(0);
    const s = await settled("w02");
    expect(s.session.result).not.toBe("terminated");
    expect(s.recordings).toEqual([]);
    expect(s.events.find((e) => e.type === "exec_output")?.data).toEqual({
      channel: 1,
      mode: "digest",
      stdout: { bytes: 300_000, sha256: sha(Buffer.from(r.stdout)) },
      stderr: { bytes: 5, sha256: sha(Buffer.from("oops\n")) },
    });
  }, 60_000);

  it("off keeps nothing but the exec event", async () => {
    const r = await sshBytes("w03", "w03_off", "head -c 100000 /dev/urandom");
    expect(r.exitCode).toBe(0);
    const s = await settled("w03");
    expect(s.recordings).toEqual([]);
    expect(s.events.find((e) => e.type === "exec_output")).toBeUndefined();
    expect(s.events.find((e) => e.type === "exec")?.data.command).toBe("head -c 100000 /dev/urandom");
  }, 60_000);

  it("a command with a pty is still an asciicast", async () => {
    const r = await h.ssh("w04_vm1", ["echo tty-$((6*7))"], { extra: ["-tt"] });
    expect(r.stdout).toContain("tty-42");
    const s = await settled("w04");
    expect(s.recordings[0]?.path).toMatch(/\.cast$/);
    expect(s.events.find((e) => e.type === "exec_output")).toBeUndefined();
  }, 60_000);

  it("stdout then a stderr flood, each larger than the SSH window, arrive whole and once (unrecorded route)", async () => {
    // Both streams wait for window space in turn; the stderr chunk used to be dropped (a hung
    // session) or replaced by a resent stale stdout chunk (ssh2 patch: retryWaitingWrites).
    const r = await sshBytes("w07", "w07_off", "head -c 5000000 /dev/zero | tr '\\0' o; head -c 5000000 /dev/zero | tr '\\0' e >&2");
    expect(r.exitCode).toBe(0);
    expect(Buffer.from(r.stdout).length).toBe(5_000_000);
    expect(Buffer.from(r.stdout).every((b) => b === 0x6f)).toBe(true);
    expect(Buffer.from(r.stderr).length).toBe(5_000_000);
    expect(Buffer.from(r.stderr).every((b) => b === 0x65)).toBe(true);
  }, 60_000);

  it("max_bytes ends a session for raw stdout (fail closed)", async () => {
    const r = await sshBytes("w05", "w05_rawcap", "head -c 20000000 /dev/urandom");
    expect(r.exitCode).not.toBe(0);
    expect(r.stdout.length).toBeLessThan(2 * 1024 * 1024);
    const s = await settled("w05");
    expect(s.session.result).toBe("terminated");
    expect(s.events.find((e) => e.type === "recording_failed")?.data).toMatchObject({ error: "max_bytes" });
    expect(s.recordings[0]?.status).toBe("truncated");
    const { frames } = readRaw(s.recordings[0]?.path ?? "");
    expect(concat(frames, RAW_STDOUT).length).toBe(64 * 1024);
  }, 60_000);

  it("a stderr flood is accounted: it reaches max_bytes too", async () => {
    const r = await sshBytes("w06", "w06_rawcap", "head -c 20000000 /dev/zero >&2");
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr.length).toBeLessThan(2 * 1024 * 1024);
    const s = await settled("w06");
    expect(s.session.result).toBe("terminated");
    const { frames } = readRaw(s.recordings[0]?.path ?? "");
    expect(concat(frames, RAW_STDERR).length).toBe(64 * 1024);
  }, 60_000);

  it("an edited raw recording is named by audit verify", async () => {
    expect(existsSync(fullPath)).toBe(true);
    const fd = openSync(fullPath, "r+");
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, 3_000_000);
    writeSync(fd, Buffer.from([(b[0] ?? 0) ^ 0xff]), 0, 1, 3_000_000);
    closeSync(fd);
    const verify = await varco("audit", "verify");
    const out = `${Buffer.from(verify.stdout).toString()}\n${Buffer.from(verify.stderr).toString()}`;
    expect(verify.exitCode).not.toBe(0);
    expect(out).toContain(fullPath);
  }, 60_000);
});
