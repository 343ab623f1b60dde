/**
 * The raw recorder (src/audit/raw.ts): bytes kept exactly, running-hash checkpoints that are
 * prefixes of the file, the `max_bytes` cut across streams, a torn last frame, the digest recorder.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { createDigestRecorder, createRawRecorder, RAW_INPUT, RAW_MARKER, RAW_STDERR, RAW_STDOUT, readRaw } from "../../src/audit/raw.ts";
import type { RecordingCheckpoint } from "../../src/audit/recording.ts";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), "varco-raw-"));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe("createRawRecorder", () => {
  it("keeps stdout, stderr and input byte for byte; checkpoints are prefixes of the file", async () => {
    const file = join(tmp(), "a", "s-1.raw");
    const marks: RecordingCheckpoint[] = [];
    const r = createRawRecorder({
      file,
      startedAtMs: 1_700_000_000_000,
      meta: { session: "s" },
      input: true,
      maxBytes: 1 << 30,
      onError: (e) => {
        throw e;
      },
      onCheckpoint: (c) => marks.push(c),
      checkpointBytes: 256 * 1024,
      checkpointMinMs: 0,
    });
    const out = randomBytes(3_000_000);
    const chunk = Buffer.from(out.subarray(0, 1000));
    r.output(chunk);
    chunk.fill(0); // the caller's buffer is reused: what was recorded must not change
    // One fsync at a time: wait for each checkpoint (bounded) before writing the next 320 KiB.
    for (let at = 1000; at < out.length; at += 32_768) {
      r.output(out.subarray(at, Math.min(out.length, at + 32_768)));
      if ((at - 1000) % (10 * 32_768) !== 0) continue;
      const seen = marks.length;
      for (let i = 0; i < 200 && marks.length === seen; i++) await new Promise((w) => setTimeout(w, 10));
    }
    r.error(Buffer.from([0xff, 0xfe, 0x0a]));
    r.input(Buffer.from("stdin"));
    const res = await r.close();
    const disk = readFileSync(file);
    expect(res.sha256).toBe(sha(disk));
    expect(res.bytes).toBe(disk.length);
    expect(res).toMatchObject({ stdoutBytes: 3_000_000, stderrBytes: 3, inputBytes: 5, truncated: false, failed: false });
    const { header, frames } = readRaw(file);
    expect(header).toEqual({ varco_raw: 1, timestamp: 1_700_000_000, varco: { session: "s" } });
    const join_ = (code: number) => Buffer.concat(frames.filter((f) => f.code === code).map((f) => f.data));
    expect(join_(RAW_STDOUT).equals(out)).toBe(true);
    expect([...join_(RAW_STDERR)]).toEqual([0xff, 0xfe, 0x0a]);
    expect(join_(RAW_INPUT).toString()).toBe("stdin");
    expect(marks.length).toBeGreaterThanOrEqual(4);
    for (const m of marks) expect(sha(disk.subarray(0, m.bytes))).toBe(m.sha256);
  });

  it("cuts at max_bytes across stdout and stderr, writes a marker frame and calls onLimit once", async () => {
    const file = join(tmp(), "s-2.raw");
    const limits: string[] = [];
    const r = createRawRecorder({
      file,
      startedAtMs: 0,
      input: false,
      maxBytes: 100,
      onError: () => undefined,
      onLimit: (d) => limits.push(d),
    });
    r.output(Buffer.alloc(60, 1));
    r.error(Buffer.alloc(60, 2));
    r.output(Buffer.alloc(60, 3));
    r.input(Buffer.alloc(10, 4)); // input not recorded without `input`
    const res = await r.close();
    expect(limits).toEqual(["output"]);
    expect(res).toMatchObject({ truncated: true, stdoutBytes: 60, stderrBytes: 40 });
    const { frames } = readRaw(file);
    expect(frames.map((f) => [f.code, f.data.length])).toEqual([
      [RAW_STDOUT, 60],
      [RAW_STDERR, 40],
      [RAW_MARKER, frames[2]?.data.length],
    ]);
    expect(frames[2]?.data.toString()).toContain("truncated at 100 bytes");
  });

  it("readRaw drops a torn last frame (a crash mid-write) and rejects a non-raw file", async () => {
    const file = join(tmp(), "s-3.raw");
    const r = createRawRecorder({ file, startedAtMs: 0, input: false, maxBytes: 1 << 20, onError: () => undefined });
    r.output(Buffer.from("first"));
    r.output(Buffer.from("second"));
    await r.close();
    truncateSync(file, readFileSync(file).length - 2);
    expect(readRaw(file).frames.map((f) => f.data.toString())).toEqual(["first"]);
    const cast = join(tmp(), "x.cast");
    writeFileSync(cast, '{"version":2}\n');
    expect(() => readRaw(cast)).toThrow(/not a varco raw recording/);
  });
});

describe("createDigestRecorder", () => {
  it("hashes each stream separately", () => {
    const d = createDigestRecorder();
    d.output(Buffer.from("ab"));
    d.output(Buffer.from("c"));
    d.error(Buffer.from("e"));
    expect(d.result()).toEqual({
      stdout: { bytes: 3, sha256: sha(Buffer.from("abc")) },
      stderr: { bytes: 1, sha256: sha(Buffer.from("e")) },
    });
  });
});
