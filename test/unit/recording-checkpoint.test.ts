/**
 * Running-hash checkpoints of an open recording: emitted at the byte threshold and on the timer,
 * each the SHA-256 of a prefix that is already in the file when it is reported, in order, never
 * repeated without new data, never after close; and the channel chains them as `recording_checkpoint`.
 */
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createChannelAudit } from "../../src/audit/channel.ts";
import { createRecorder, type RecordingCheckpoint, type RecordingOptions } from "../../src/audit/recording.ts";
import type { AuditEventInput, AuditSink } from "../../src/audit/store.ts";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "varco-rck-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** A recorder whose checkpoints are checked against the file on disk at the moment they are reported. */
function open(o: Partial<RecordingOptions> = {}) {
  const file = join(dir, "r.cast");
  const seen: Array<RecordingCheckpoint & { onDisk: string; size: number }> = [];
  const r = createRecorder({
    file,
    header: { width: 80, height: 24, startedAtMs: Date.UTC(2026, 0, 2, 3, 4, 5) },
    input: true,
    maxBytes: 64 * 1024 * 1024,
    onError: () => undefined,
    onCheckpoint: (c) => {
      const buf = readFileSync(file);
      seen.push({ ...c, onDisk: sha(buf.subarray(0, c.bytes)), size: buf.length });
    },
    checkpointMs: 60_000,
    ...o,
  });
  return { r, file, seen };
}

const settle = () => new Promise((res) => setTimeout(res, 50));

describe("recording checkpoints", () => {
  it("are emitted every checkpointBytes, each a prefix already written to the file", async () => {
    const { r, file, seen } = open({ checkpointBytes: 10_000 });
    for (let i = 0; i < 100; i++) {
      r.input(Buffer.from(`line ${i} ${"x".repeat(1000)}\r`));
      if (i % 10 === 0) await settle();
    }
    await settle();
    const result = await r.close();
    const final = readFileSync(file);
    expect(result.sha256).toBe(sha(final));
    // ~100 KB of file in 10 KB steps: about 10 checkpoints, one per threshold crossed.
    expect(seen.length).toBeGreaterThanOrEqual(9);
    expect(seen.length).toBeLessThanOrEqual(11);
    let prev = 0;
    for (const c of seen) {
      expect(c.bytes - prev).toBeGreaterThanOrEqual(10_000);
      expect(c.bytes - prev).toBeLessThan(10_000 + 1200);
      prev = c.bytes;
      // Reported only once the prefix is on disk (the file is at least that long, with that content).
      expect(c.size).toBeGreaterThanOrEqual(c.bytes);
      expect(c.onDisk).toBe(c.sha256);
      // And a prefix of the final file.
      expect(sha(final.subarray(0, c.bytes))).toBe(c.sha256);
    }
    expect(prev).toBeLessThanOrEqual(final.length);
  });

  it("coalesced output crossing the threshold in one write still yields a checkpoint, in order", async () => {
    const { r, seen } = open({ checkpointBytes: 4096 });
    for (let i = 0; i < 20; i++) r.output(Buffer.alloc(70_000, 0x61)); // > COALESCE_BYTES: flushed at once
    await r.close();
    expect(seen.length).toBeGreaterThanOrEqual(10);
    for (let i = 1; i < seen.length; i++)
      expect((seen[i] as RecordingCheckpoint).bytes).toBeGreaterThan((seen[i - 1] as RecordingCheckpoint).bytes);
    for (const c of seen) expect(c.onDisk).toBe(c.sha256);
  });

  it("are emitted on the timer when data arrived, and not repeated without new data", async () => {
    const { r, file, seen } = open({ checkpointMs: 40 });
    r.input(Buffer.from("ls\r"));
    await new Promise((res) => setTimeout(res, 250));
    expect(seen).toHaveLength(1);
    const c = seen[0] as RecordingCheckpoint & { size: number };
    expect(c.bytes).toBe(readFileSync(file).length);
    r.input(Buffer.from("pwd\r"));
    await new Promise((res) => setTimeout(res, 150));
    expect(seen).toHaveLength(2);
    await r.close();
    const n = seen.length;
    await new Promise((res) => setTimeout(res, 150));
    expect(seen).toHaveLength(n); // nothing after close
  });

  it("are not emitted below the threshold and without the timer", async () => {
    const { r, seen } = open({ checkpointBytes: 1_000_000 });
    r.output(Buffer.alloc(10_000, 0x62));
    await r.close();
    expect(seen).toHaveLength(0);
  });
});

describe("channel wiring", () => {
  it("chains every checkpoint as a recording_checkpoint event { channel, bytes, sha256 }", async () => {
    const appended: AuditEventInput[] = [];
    const closed: Array<{ sha256: string; bytes: number }> = [];
    const sink: AuditSink = {
      append: (e) => appended.push(e),
      startSession: () => undefined,
      endSession: () => undefined,
      recordingStarted: () => undefined,
      recordingClosed: (_s, _c, r) => closed.push(r),
      healthy: () => ({ ok: true, detail: "" }),
      flush: () => undefined,
      writable: () => true,
    };
    const audit = createChannelAudit({
      audit: sink,
      recordingsDir: dir,
      sessionId: "s-1",
      channel: 3,
      uid: "mario.rossi",
      account: "mario.rossi_vm1",
      target: "vm1",
      kind: "shell",
      arg: "",
      command: undefined,
      pty: { cols: 80, rows: 24, term: "xterm" },
      record: { enabled: true, input: false, on_recording_failure: "terminate", max_bytes: 10_000_000 },
      now: () => Date.now(),
      terminate: () => undefined,
      log: () => undefined,
      checkpointBytes: 50_000,
    });
    for (let i = 0; i < 10; i++) audit.down?.write(Buffer.alloc(70_000, 0x41 + i));
    await audit.close({ up: 0, down: 700_000 });
    const cps = appended.filter((e) => e.type === "recording_checkpoint");
    expect(cps.length).toBeGreaterThanOrEqual(9);
    for (const e of cps) {
      expect(e).toMatchObject({ sessionId: "s-1", uid: "mario.rossi", target: "vm1" });
      expect(Object.keys(e.data ?? {}).sort()).toEqual(["bytes", "channel", "sha256"]);
      expect(e.data?.channel).toBe(3);
      expect(e.data?.sha256).toMatch(/^[0-9a-f]{64}$/);
    }
    expect(closed).toHaveLength(1);
    expect(cps[cps.length - 1]?.data?.bytes as number).toBeLessThanOrEqual(closed[0]?.bytes ?? 0);
  });
});
