/**
 * The asciicast recorder on its own: max_bytes over output and input together (memory and file
 * stay bounded, the limit is reported once), backpressure on input, monotonic timestamps, and
 * input hidden after password-like prompts.
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createRecorder, HIDDEN_INPUT_MARKER, type RecordingOptions } from "../../src/audit/recording.ts";

let dir: string;
let n = 0;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "varco-rec-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function open(o: Partial<RecordingOptions> = {}) {
  const limits: string[] = [];
  const errors: string[] = [];
  const file = join(dir, `r${n++}.cast`);
  const r = createRecorder({
    file,
    header: { width: 80, height: 24, startedAtMs: Date.UTC(2026, 0, 2, 3, 4, 5) },
    input: true,
    maxBytes: 64 * 1024 * 1024,
    onError: (e) => errors.push(e.code ?? e.message),
    onLimit: (d) => limits.push(d),
    ...o,
  });
  return { r, file, limits, errors };
}

type Line = [number, string, string];
const events = (file: string): Line[] =>
  readFileSync(file, "utf8")
    .split("\n")
    .slice(1)
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Line);
const inputs = (file: string) =>
  events(file)
    .filter((e) => e[1] === "i")
    .map((e) => e[2]);

/** Feeds `total` bytes in `chunk`-sized pieces through `write`, waiting for drain like the relay does. */
async function pour(write: (b: Buffer) => boolean, onDrain: (fn: () => void) => void, total: number, chunk: number) {
  const piece = Buffer.alloc(chunk, 0x61);
  for (let sent = 0; sent < total; sent += chunk) {
    if (!write(piece)) await new Promise<void>((resolve) => onDrain(resolve));
  }
}

describe("max_bytes", () => {
  it("bounds recorded input: 20 MiB of stdin with max_bytes 1 KiB leaves a small file and reports the limit once", async () => {
    const { r, file, limits } = open({ maxBytes: 1024 });
    const rss = process.memoryUsage().rss;
    await pour(
      (b) => r.input(b),
      (fn) => r.onDrain(fn),
      20 * 1024 * 1024,
      32 * 1024,
    );
    const res = await r.close();
    expect(limits).toEqual(["input"]);
    expect(res.truncated).toBe(true);
    expect(res.inputBytes).toBe(1024);
    expect(statSync(file).size).toBeLessThan(4096);
    expect(res.bytes).toBe(statSync(file).size);
    expect(process.memoryUsage().rss - rss).toBeLessThan(64 * 1024 * 1024);
    const last = events(file).at(-1);
    expect(last?.[1]).toBe("m");
    expect(inputs(file).join("").length).toBe(1024);
  });

  it("counts output and input against one cap", async () => {
    const { r, file, limits } = open({ maxBytes: 1000 });
    expect(r.output(Buffer.alloc(600, 0x6f))).toBe(true);
    r.input(Buffer.alloc(600, 0x69));
    expect(limits).toEqual(["input"]);
    expect(r.output(Buffer.from("more"))).toBe(true); // nothing more is recorded, no second report
    expect(limits).toEqual(["input"]);
    const res = await r.close();
    expect(res.outputBytes + res.inputBytes).toBe(1000);
    const all = events(file);
    expect(all.filter((e) => e[1] === "o").map((e) => e[2].length)).toEqual([600]);
    expect(inputs(file)).toEqual(["i".repeat(400)]);
  });

  it("reports an output limit once and records up to the cap, not beyond", async () => {
    const { r, file, limits } = open({ maxBytes: 100, input: false });
    r.output(Buffer.alloc(60, 0x41));
    r.output(Buffer.alloc(60, 0x42));
    r.output(Buffer.alloc(60, 0x43));
    const res = await r.close();
    expect(limits).toEqual(["output"]);
    expect(res).toMatchObject({ truncated: true, outputBytes: 100, inputBytes: 0 });
    const text = events(file)
      .filter((e) => e[1] === "o")
      .map((e) => e[2])
      .join("");
    expect(text).toBe(`${"A".repeat(60)}${"B".repeat(40)}`);
  });

  it("without input recording, input neither counts nor writes", async () => {
    const { r, file, limits } = open({ maxBytes: 10, input: false });
    for (let i = 0; i < 100; i++) expect(r.input(Buffer.alloc(1000))).toBe(true);
    const res = await r.close();
    expect(limits).toEqual([]);
    expect(res.inputBytes).toBe(0);
    expect(events(file)).toEqual([]);
  });

  it("applies backpressure to input: write() returns false once the buffer is full, onDrain releases", async () => {
    const { r } = open({ highWaterMark: 1024 });
    let refused = false;
    for (let i = 0; i < 10 && !refused; i++) refused = !r.input(Buffer.alloc(800, 0x78));
    expect(refused).toBe(true);
    await new Promise<void>((resolve) => r.onDrain(resolve));
    await r.close();
  });
});

describe("timestamps", () => {
  it("come from the monotonic clock relative to the start; the header keeps the wall-clock start", async () => {
    let t = 5_000_000; // any origin
    const { r, file } = open({ monotonic: () => t });
    t += 1500;
    r.input(Buffer.from("a"));
    t += 250;
    r.resize(100, 30);
    const res = await r.close();
    expect(res.failed).toBe(false);
    const header = JSON.parse(readFileSync(file, "utf8").split("\n")[0] ?? "{}") as { timestamp: number };
    expect(header.timestamp).toBe(Date.UTC(2026, 0, 2, 3, 4, 5) / 1000);
    expect(events(file).map((e) => e[0])).toEqual([1.5, 1.75]);
  });

  it("never go backwards even if the injected clock does", async () => {
    let t = 100;
    const { r, file } = open({ monotonic: () => t });
    t = 50;
    r.input(Buffer.from("a"));
    await r.close();
    expect(events(file)[0]?.[0]).toBe(0);
  });
});

describe("input after password prompts", () => {
  /** Output then input, chunk by chunk, returning the recorded "i" events. */
  async function typed(steps: Array<["o" | "i", string]>): Promise<{ inputs: string[]; text: string }> {
    const { r, file } = open();
    for (const [kind, s] of steps) {
      if (kind === "o") r.output(Buffer.from(s));
      else r.input(Buffer.from(s));
    }
    await r.close();
    return { inputs: inputs(file), text: readFileSync(file, "utf8") };
  }
  const keys = (s: string): Array<["i", string]> => [...s].map((c) => ["i", c]);

  for (const prompt of [
    "[sudo] password for mario: ",
    "Password: ",
    "mario@db1's password:",
    "Verification code: ",
    "Enter passphrase for key '/home/mario/.ssh/id_ed25519': ",
    "\x1b[1;31mPassword:\x1b[0m ",
  ]) {
    it(`hides what is typed after ${JSON.stringify(prompt)} up to the CR, key by key`, async () => {
      const { inputs, text } = await typed([["o", `$ sudo -i\r\n${prompt}`], ...keys("hunter2\r"), ...keys("id\r")]);
      expect(inputs).toEqual([HIDDEN_INPUT_MARKER, "\r", "i", "d", "\r"]);
      expect(text).not.toContain("hunter");
    });
  }

  it("hides a secret pasted in one chunk with the following line in it", async () => {
    const { inputs, text } = await typed([
      ["o", "Password: "],
      ["i", "s3cr3t-pw\nls -l\n"],
    ]);
    expect(inputs).toEqual([`${HIDDEN_INPUT_MARKER}\nls -l\n`]);
    expect(text).not.toContain("s3cr3t");
  });

  it("finds a prompt split across output chunks", async () => {
    const { inputs } = await typed([["o", "[sudo] pass"], ["o", "word for m"], ["o", "ario: "], ...keys("pw\r")]);
    expect(inputs).toEqual([HIDDEN_INPUT_MARKER, "\r"]);
  });

  it("keeps hiding across output while the answer is typed (pwfeedback asterisks) until CR", async () => {
    const { inputs } = await typed([
      ["o", "[sudo] password for mario: "],
      ["i", "ab"],
      ["o", "**"],
      ["i", "cd"],
      ["o", "**"],
      ["i", "\r"],
    ]);
    expect(inputs).toEqual([HIDDEN_INPUT_MARKER, "\r"]);
  });

  it("hides again at a second prompt (sudo retry), but not ordinary input after the answer", async () => {
    const { inputs } = await typed([
      ["o", "Password: "],
      ["i", "wrong\r"],
      ["o", "\r\nSorry, try again.\r\nPassword: "],
      ["i", "right\r"],
      ["o", "\r\n# "],
      ["i", "whoami\r"],
    ]);
    expect(inputs).toEqual([`${HIDDEN_INPUT_MARKER}\r`, `${HIDDEN_INPUT_MARKER}\r`, "whoami\r"]);
  });

  it("does not hide input after text that only mentions a password earlier on the line or on a finished line", async () => {
    const { inputs } = await typed([
      ["o", "the password: is in the vault\r\n$ "],
      ["i", "ls\r"],
      ["o", "echo Password:\r\nPassword:\r\n$ "],
      ["i", "pwd\r"],
    ]);
    expect(inputs).toEqual(["ls\r", "pwd\r"]);
  });

  it("an empty answer (just Enter) writes no marker", async () => {
    const { inputs } = await typed([
      ["o", "Password: "],
      ["i", "\r"],
      ["o", "\r\n$ "],
      ["i", "ls\r"],
    ]);
    expect(inputs).toEqual(["\r", "ls\r"]);
  });
});
