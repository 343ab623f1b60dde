/**
 * `varco audit list/show/export/verify` never write a control sequence recorded from a session to
 * the auditor's terminal: commands, paths, names, sources and data values come out escaped
 * (`\x1b`, `\r`, `\u202e`), and the JSON outputs stay the same JSON values. Runs the real CLI on
 * an audit DB written through the store API.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openAuditStore } from "../../src/audit/index.ts";
import { ROOT } from "../helpers/harness.ts";

const ESC = "\x1b";
const EVIL_COMMAND = `echo ${ESC}[2J${ESC}]0;pwned\x07\rhidden\bX \x9b31m\u202egnp.exe\u2066 perché`;
const EVIL_PATH = `/tmp/${ESC}[8mhidden${ESC}[0m\x7f\x85.txt`;
const SID = "0d1e2f30-aaaa-4bbb-8ccc-ddddeeeeffff";

let dir: string;
let policyFile: string;
const varco = (...args: string[]) =>
  execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", policyFile, ...args], { reject: false, encoding: "buffer" });

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "varco-audit-output-"));
  policyFile = join(dir, "gateway.yaml");
  writeFileSync(
    policyFile,
    `version: 1
gateway:
  listen: ["127.0.0.1:0"]
  host_keys: [keys/host]
  egress_key: keys/egress
  state_dir: state
directory:
  local_users:
    - { uid: admin.local, password_hash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g" }
auth:
  chains: [[password, totp]]
targets:
  t1: { host: 127.0.0.1, host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz" }
routes:
  - { users: [u], alias: a, target: t1 }
`,
  );
  mkdirSync(join(dir, "state"), { mode: 0o700 });
  const store = openAuditStore(join(dir, "state", "audit.db"));
  const who = { uid: `mario${ESC}[2K`, account: `mario\r_vm1`, target: `t1\u202e`, source: "::ffff:192.0.2.7" };
  store.startSession({ id: SID, ...who });
  store.append({ type: "exec", sessionId: SID, ...who, data: { channel: 0, command: EVIL_COMMAND } });
  store.append({ type: "subsystem", sessionId: SID, ...who, data: { channel: 1, name: `sftp${ESC}[31m` } });
  store.append({
    type: "file",
    sessionId: SID,
    ...who,
    result: `ok${ESC}[1A`,
    data: { protocol: "sftp", op: `rename\b`, path: EVIL_PATH, toPath: `/tmp/b\x9b2J`, size: 3 },
  });
  store.recordingStarted(SID, 0, join(dir, `rec${ESC}[2J.cast`));
  store.endSession(SID, { result: `ok\x07`, upBytes: 1, downBytes: 2, exitStatus: 0 });
  store.close();
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Every byte < 0x20 but \n, DEL, and every C1 / bidi code point, found in `out`. */
function offending(out: Uint8Array): string[] {
  const bad: string[] = [];
  for (const b of out) if ((b < 0x20 && b !== 0x0a) || b === 0x7f) bad.push(`byte 0x${b.toString(16)}`);
  for (const c of Buffer.from(out).toString("utf8")) {
    const cp = c.codePointAt(0) as number;
    if ((cp >= 0x80 && cp <= 0x9f) || /[\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/u.test(c)) bad.push(`U+${cp.toString(16)}`);
  }
  return bad;
}
const text = (b: Uint8Array) => Buffer.from(b).toString("utf8");

describe("audit output on a terminal", () => {
  it("`audit show ID` escapes commands, paths, names, results and data values", async () => {
    const r = await varco("audit", "show", SID.slice(0, 8));
    expect(r.exitCode, text(r.stderr)).toBe(0);
    expect(offending(r.stdout)).toEqual([]);
    const out = text(r.stdout);
    // Visible, so the auditor sees what was attempted.
    expect(out).toContain("echo \\x1b[2J\\x1b]0;pwned\\x07\\rhidden\\bX \\x9b31m\\u202egnp.exe\\u2066 perché");
    expect(out).toContain("/tmp/\\x1b[8mhidden\\x1b[0m\\x7f\\x85.txt -> /tmp/b\\x9b2J");
    expect(out).toContain("sftp\\x1b[31m");
    expect(out).toContain("rec\\x1b[2J.cast");
    expect(out).toContain("mario\\x1b[2K");
    expect(out).toContain("192.0.2.7");
    expect(out).not.toContain("::ffff:");
  });

  it("`audit list` escapes every cell", async () => {
    const r = await varco("audit", "list");
    expect(r.exitCode, text(r.stderr)).toBe(0);
    expect(offending(r.stdout)).toEqual([]);
    expect(text(r.stdout)).toContain("mario\\r_vm1");
    expect(text(r.stdout)).toContain("t1\\u202e");
  });

  it("the JSON outputs escape what JSON.stringify leaves raw, and still parse to the exact values", async () => {
    const show = await varco("audit", "show", SID, "--json");
    expect(show.exitCode).toBe(0);
    expect(offending(show.stdout)).toEqual([]);
    const parsed = JSON.parse(text(show.stdout)) as { events: Array<{ type: string; data: Record<string, unknown> }> };
    expect(parsed.events.find((e) => e.type === "exec")?.data.command).toBe(EVIL_COMMAND);
    expect(parsed.events.find((e) => e.type === "file")?.data.path).toBe(EVIL_PATH);

    const list = await varco("audit", "list", "--json");
    expect(offending(list.stdout)).toEqual([]);
    expect((JSON.parse(text(list.stdout)) as { sessions: Array<{ target: string }> }).sessions[0]?.target).toBe("t1\u202e");

    const exported = await varco("audit", "export", "--format", "jsonl");
    expect(exported.exitCode).toBe(0);
    expect(offending(exported.stdout)).toEqual([]);
    const cmds = text(exported.stdout)
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { data?: { command?: string } });
    expect(cmds.some((e) => e.data?.command === EVIL_COMMAND)).toBe(true);
  });

  it("a session id typed with control characters is echoed escaped", async () => {
    const r = await varco("audit", "show", `nope${ESC}]0;x\x07`);
    expect(r.exitCode).toBe(1);
    expect(offending(r.stderr)).toEqual([]);
  });
});
