/**
 * The raw recorder (src/audit/raw.ts): bytes kept exactly, running-hash checkpoints that are
 * prefixes of the file, the `max_bytes` cut across streams, a torn last frame, the digest recorder.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  createDigestRecorder,
  createRawRecorder,
  RAW_INPUT,
  RAW_MARKER,
  RAW_STDERR,
  RAW_STDOUT,
  type RawRecordingOptions,
  readRaw,
  recordingWriterThread,
} from "../../src/audit/raw.ts";
import type { RecordingCheckpoint } from "../../src/audit/recording.ts";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
/** A raw recorder of `file` with no input, a 1 GiB cap and errors ignored, unless `o` says otherwise. */
const recorder = (file: string, o: Partial<RawRecordingOptions> = {}) =>
  createRawRecorder({ file, startedAtMs: 0, input: false, maxBytes: 1 << 30, onError: () => undefined, ...o });
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

describe("createRawRecorder under bulk output", () => {
  it("a writer thread that dies fails every open recording (EWORKER), holds no drain, and the next recording gets a new thread", async () => {
    const d = tmp();
    const errors: string[][] = [[], []];
    const open = [0, 1].map((i) =>
      recorder(join(d, `w-${i}.raw`), { highWaterMark: 64 * 1024, onError: (e) => errors[i]?.push(e.code ?? e.message) }),
    );
    const first = open[0];
    const second = open[1];
    if (!first || !second) throw new Error("unreachable");
    expect(first.output(randomBytes(1000))).toBe(true);
    // Past the mark, waiting for the writer: the drain must come (as a failure), never hang.
    while (second.output(randomBytes(16 * 1024)));
    const drained = new Promise<void>((resolve) => second.onDrain(resolve));
    const thread = recordingWriterThread();
    expect(thread).toBeDefined();
    await thread?.terminate();
    await drained;
    expect(errors).toEqual([["EWORKER"], ["EWORKER"]]);
    const results = await Promise.all(open.map((r) => r.close()));
    for (const res of results) {
      expect(res.failed).toBe(true);
      // The hash covers what reached the disk, whatever that is.
      expect(res.sha256).toBe(sha(readFileSync(res.file)));
    }
    const file = join(d, "w-2.raw");
    const next = recorder(file);
    expect(recordingWriterThread()).not.toBe(thread);
    const data = randomBytes(100_000);
    next.output(data);
    const res = await next.close();
    expect(res.failed).toBe(false);
    expect(res.sha256).toBe(sha(readFileSync(file)));
    expect(Buffer.concat(readRaw(file).frames.map((f) => f.data)).equals(data)).toBe(true);
  });

  it("a writer started from another working directory still loads; close() twice gives one result to both", async () => {
    const thread = recordingWriterThread();
    await thread?.terminate();
    const cwd = process.cwd();
    const d = tmp();
    process.chdir(d);
    try {
      const file = join(d, "c-1.raw");
      const errors: string[] = [];
      const r = recorder(file, { onError: (e) => errors.push(e.code ?? "") });
      r.output(Buffer.from("hello"));
      const [a, b] = await Promise.all([r.close(), r.close()]);
      expect(errors).toEqual([]);
      expect(a.failed).toBe(false);
      expect(b).toEqual(a);
      expect(a.sha256).toBe(sha(readFileSync(file)));
      expect(recordingWriterThread()).not.toBe(thread);
    } finally {
      process.chdir(cwd);
    }
  });

  it("a recording with nothing in flight when the writer dies gets its descriptor closed", async () => {
    const d = tmp();
    const file = join(d, "i-1.raw");
    /** This process's descriptors open on `file` (proc(5): /proc/self/fd links). */
    const fds = () =>
      readdirSync("/proc/self/fd").filter((n) => {
        try {
          return readlinkSync(`/proc/self/fd/${n}`) === file;
        } catch {
          return false;
        }
      }).length;
    // A checkpoint after the one frame: once it is reported, the writer has answered every request.
    let reported: () => void = () => undefined;
    const checkpointed = new Promise<void>((resolve) => {
      reported = resolve;
    });
    const r = recorder(file, { checkpointBytes: 1, checkpointMinMs: 0, checkpointMs: 60_000, onCheckpoint: () => reported() });
    expect(fds()).toBe(1);
    r.output(Buffer.from("idle"));
    await checkpointed;
    await recordingWriterThread()?.terminate();
    const res = await r.close();
    expect(res.failed).toBe(true);
    expect(fds()).toBe(0);
  });

  it("an error handler that throws still lets the relay's drain and close() through", async () => {
    const d = tmp();
    const r = recorder(join(d, "t-1.raw"), {
      highWaterMark: 64 * 1024,
      onError: () => {
        throw new Error("handler bug");
      },
    });
    let calls = 0;
    const other = recorder(join(d, "t-2.raw"), { onError: () => calls++ });
    while (r.output(randomBytes(16 * 1024)));
    const drained = new Promise<void>((resolve) => r.onDrain(resolve));
    await recordingWriterThread()?.terminate();
    await drained;
    expect(calls).toBe(1);
    expect((await r.close()).failed).toBe(true);
    expect((await other.close()).failed).toBe(true);
  });

  it("a chunk larger than a block (256 KiB) is kept whole", async () => {
    const file = join(tmp(), "s-9.raw");
    const r = recorder(file, { input: true });
    const big = randomBytes(700 * 1024);
    const small = randomBytes(3);
    r.output(small);
    r.error(big);
    r.input(small);
    const res = await r.close();
    expect(res.failed).toBe(false);
    expect(res.sha256).toBe(sha(readFileSync(file)));
    const frames = readRaw(file).frames;
    expect(frames.map((f) => f.code)).toEqual([RAW_STDOUT, RAW_STDERR, RAW_INPUT]);
    expect(frames[1]?.data.equals(big)).toBe(true);
  });

  it("bounds unwritten bytes: returns false past highWaterMark and drains once written", async () => {
    const file = join(tmp(), "s-4.raw");
    const r = recorder(file, { highWaterMark: 64 * 1024 });
    const chunk = randomBytes(16 * 1024);
    let oks = 0;
    while (r.output(chunk)) oks++;
    // Nothing is written synchronously: the fourth 16 KiB chunk (plus header and frames) crosses 64 KiB.
    expect(oks).toBe(3);
    await new Promise<void>((resolve) => r.onDrain(resolve));
    expect(r.output(chunk)).toBe(true);
    const res = await r.close();
    expect(res.stdoutBytes).toBe(5 * 16 * 1024);
  });

  it("drains registered by stdout and stderr while no write is in flight both run (the relay's two pumps)", async () => {
    const file = join(tmp(), "s-5.raw");
    const r = recorder(file, { highWaterMark: 64 * 1024 });
    // Two frames over the mark, gathered in a partly filled block: no full block, so no write starts
    // at once; only the 2 ms coalescing timer sends them. Each stream's pump waits for its drain.
    expect(r.output(randomBytes(40 * 1024))).toBe(true);
    expect(r.error(randomBytes(40 * 1024))).toBe(false);
    expect(r.output(randomBytes(10))).toBe(false);
    const ran: string[] = [];
    await Promise.race([
      Promise.all([
        new Promise<void>((res) => r.onDrain(() => res(void ran.push("out")))),
        new Promise<void>((res) => r.onDrain(() => res(void ran.push("err")))),
      ]),
      new Promise((res) => setTimeout(res, 2000)),
    ]);
    expect(ran.sort()).toEqual(["err", "out"]);
    const res = await r.close();
    expect([res.stdoutBytes, res.stderrBytes]).toEqual([40 * 1024 + 10, 40 * 1024]);
  });

  it("two recordings interleaved through the shared block pool each keep exactly their own bytes", async () => {
    const d = tmp();
    const mk = (n: string) => recorder(join(d, n));
    const a = mk("a.raw");
    const b = mk("b.raw");
    const da = randomBytes(2_000_000);
    const db = randomBytes(2_000_000);
    for (let at = 0; at < da.length; at += 30_000) {
      a.output(da.subarray(at, at + 30_000));
      b.output(db.subarray(at, at + 30_000));
      if (at % 300_000 === 0) await new Promise((w) => setImmediate(w));
    }
    await Promise.all([a.close(), b.close()]);
    // Blocks went back to the pool and were reused while the other recording was still writing.
    const c = mk("c.raw");
    c.output(Buffer.from("after"));
    await c.close();
    const out = (f: string) => Buffer.concat(readRaw(join(d, f)).frames.map((x) => x.data));
    expect(out("a.raw").equals(da)).toBe(true);
    expect(out("b.raw").equals(db)).toBe(true);
    expect(out("c.raw").toString()).toBe("after");
  });

  it("checkpoints stay checkpointMinMs apart, and the last one still covers a prefix", async () => {
    const file = join(tmp(), "s-5.raw");
    const marks: RecordingCheckpoint[] = [];
    const r = createRawRecorder({
      file,
      startedAtMs: 0,
      input: false,
      maxBytes: 1 << 30,
      onError: () => undefined,
      onCheckpoint: (c) => marks.push(c),
      checkpointBytes: 64 * 1024,
      checkpointMinMs: 100,
    });
    const t0 = performance.now();
    const chunk = randomBytes(32 * 1024);
    while (performance.now() - t0 < 450) {
      r.output(chunk);
      await new Promise((w) => setTimeout(w, 2));
    }
    await r.close();
    const disk = readFileSync(file);
    // 64 KiB every 4 ms would be ~100 checkpoints; at most one per 100 ms is 5.
    expect(marks.length).toBeGreaterThanOrEqual(2);
    expect(marks.length).toBeLessThanOrEqual(6);
    // (Their spacing is not asserted in ms: a loaded machine delays the callbacks unevenly; the count bounds it.)
    for (const m of marks) expect(sha(disk.subarray(0, m.bytes))).toBe(m.sha256);
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
