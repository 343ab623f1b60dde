/**
 * verifyAuditDb and recording running-hash checkpoints: an interrupted recording (gateway killed,
 * file hashed at the next start) is checked against the newest chained checkpoint, so an edit made
 * before the restart is caught; complete recordings must extend every checkpoint; an untouched
 * recording passes.
 */
import { createHash } from "node:crypto";
import { appendFileSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { openAuditStore } from "../../src/audit/index.ts";
import { verifyAuditDb } from "../../src/audit/verify.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

const HEAD = '{"version":2,"width":80,"height":24}\n';
const line = (i: number) => `[${i}.0,"o","output line ${i} ${"z".repeat(200)}"]\n`;

/**
 * A session with one recording that got `n` checkpoints (one per 10 lines), then the gateway died:
 * the store is closed without closing the session, as kill -9 would leave it.
 */
function crashed(n = 3, extraLines = 4) {
  const dir = mkdtempSync(join(tmpdir(), "varco-vck-"));
  dirs.push(dir);
  const file = join(dir, "audit.db");
  const path = join(dir, "s1-1.cast");
  const store = openAuditStore(file);
  store.startSession({ id: "s1", uid: "u1", account: "u1_vm1", target: "vm1", source: "10.0.0.1" });
  store.recordingStarted("s1", 1, path);
  writeFileSync(path, HEAD);
  const cps: Array<{ bytes: number; sha256: string }> = [];
  let i = 0;
  for (let c = 0; c < n; c++) {
    for (let k = 0; k < 10; k++) appendFileSync(path, line(i++));
    const buf = readFileSync(path);
    const cp = { bytes: buf.length, sha256: sha(buf) };
    cps.push(cp);
    store.append({ type: "recording_checkpoint", sessionId: "s1", uid: "u1", target: "vm1", data: { channel: 1, ...cp } });
  }
  for (let k = 0; k < extraLines; k++) appendFileSync(path, line(i++));
  store.close();
  /** The next start: open recordings are hashed as they are now and chained as interrupted. */
  const restart = () => {
    const again = openAuditStore(file);
    again.closeInterrupted();
    again.close();
  };
  return { dir, file, path, cps, store, restart };
}

/** Overwrites one byte at `at` (keeps the length: an edit, not a cut). */
function editByte(path: string, at: number) {
  const buf = readFileSync(path);
  buf[at] = buf[at] === 0x41 ? 0x42 : 0x41;
  writeFileSync(path, buf);
}

describe("interrupted recordings and their checkpoints", () => {
  it("an untouched interrupted recording passes (bytes after the newest checkpoint included)", () => {
    const { file, restart } = crashed();
    restart();
    const r = verifyAuditDb(file);
    expect(r.issues).toEqual([]);
    expect(r.ok).toBe(true);
  });

  it("an early byte edited before the restart is reported, although the restart chained the edited file's hash", () => {
    const { file, path, restart } = crashed();
    editByte(path, HEAD.length + 30);
    restart();
    const r = verifyAuditDb(file);
    expect(r.ok).toBe(false);
    expect(r.issues).toHaveLength(1);
    expect(r.issues[0]).toMatchObject({ kind: "recording", id: `s1-1 (${path})` });
    expect(r.issues[0]?.reason).toContain("interrupted recording's file does not start with the prefix chained by its newest checkpoint");
    expect(r.issues[0]?.reason).toContain("3 of 3");
  });

  it("an edit between the two newest checkpoints is reported (only the newest covers it)", () => {
    const { file, path, cps, restart } = crashed();
    editByte(path, (cps[1]?.bytes ?? 0) + 5);
    restart();
    const r = verifyAuditDb(file);
    expect(r.issues).toHaveLength(1);
    expect(r.issues[0]?.reason).toContain("newest checkpoint");
    expect(r.issues[0]?.reason).toContain("1 of 3");
  });

  it("a file cut below its newest checkpoint is reported, even cut to exactly an older checkpoint", () => {
    const { file, path, cps, restart } = crashed();
    truncateSync(path, cps[1]?.bytes ?? 0);
    restart();
    const r = verifyAuditDb(file);
    expect(r.issues).toHaveLength(1);
    expect(r.issues[0]?.reason).toContain("newest checkpoint");
    expect(r.issues[0]?.found).toContain(`a file of ${cps[1]?.bytes} bytes`);
  });

  it("a file replaced by one of the same length with the same last line is reported", () => {
    const { file, path, restart } = crashed();
    const orig = readFileSync(path, "utf8");
    writeFileSync(path, orig.replace("output line 3 ", "output line X "));
    restart();
    expect(verifyAuditDb(file).ok).toBe(false);
  });

  it("an edit after the newest checkpoint is beyond what checkpoints can prove (documented limit)", () => {
    const { file, path, cps, restart } = crashed();
    editByte(path, (cps[2]?.bytes ?? 0) + 5);
    restart();
    expect(verifyAuditDb(file).ok).toBe(true);
  });

  it("a malformed chained checkpoint is reported", () => {
    const { file, restart, dir } = crashed(1);
    const s = openAuditStore(file);
    s.append({ type: "recording_checkpoint", sessionId: "s1", data: { channel: 1, bytes: "12", sha256: 5 } });
    s.close();
    restart();
    const r = verifyAuditDb(file);
    expect(r.issues.some((i) => i.reason === "a chained recording checkpoint is malformed")).toBe(true);
    expect(dir).toBeTruthy();
  });
});

describe("complete recordings and their checkpoints", () => {
  it("a complete recording must extend every checkpoint; it passes when it does", () => {
    const { file, path } = crashed(2, 3);
    const s = openAuditStore(file);
    const buf = readFileSync(path);
    s.recordingClosed("s1", 1, { sha256: sha(buf), bytes: buf.length, status: "complete" });
    s.endSession("s1", { result: "ok", upBytes: 1, downBytes: buf.length, exitStatus: 0 });
    s.close();
    expect(verifyAuditDb(file).issues).toEqual([]);
  });

  it("a checkpoint that is not a prefix of the closed file (file rewritten before close) is reported", () => {
    const { file, path } = crashed(2, 3);
    editByte(path, HEAD.length + 2);
    const s = openAuditStore(file);
    const buf = readFileSync(path);
    // The close hash matches the edited file: only the checkpoints tell.
    s.recordingClosed("s1", 1, { sha256: sha(buf), bytes: buf.length, status: "truncated" });
    s.endSession("s1", { result: "ok", upBytes: 1, downBytes: buf.length, exitStatus: 0 });
    s.close();
    const r = verifyAuditDb(file);
    expect(r.issues).toHaveLength(1);
    expect(r.issues[0]?.reason).toContain("not an extension of its chained running-hash checkpoints (2 of 2 differ");
  });
});
