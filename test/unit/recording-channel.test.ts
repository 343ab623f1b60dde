/**
 * createChannelAudit's failure paths with a fake audit sink: max_bytes (output or input) follows
 * on_recording_failure, an sftp subsystem that does not speak SFTP follows record.on_unparsed, and
 * once terminating, the taps refuse every byte and never drain (nothing more passes unaudited).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createChannelAudit } from "../../src/audit/channel.ts";
import type { AuditEventInput, AuditSink } from "../../src/audit/store.ts";
import type { RecordSettings } from "../../src/policy/index.ts";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "varco-chan-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function setup(record: Partial<RecordSettings>, kind: "shell" | "subsystem" = "shell", opts: { appendThrows?: boolean } = {}) {
  const appended: AuditEventInput[] = [];
  const closed: Array<{ status: string }> = [];
  const terminated: string[] = [];
  const sink: AuditSink = {
    append: (e) => {
      if (opts.appendThrows) throw new Error("SQLITE_FULL");
      appended.push(e);
    },
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
    channel: 1,
    uid: "mario.rossi",
    account: "mario.rossi_vm1",
    target: "vm1",
    kind,
    arg: kind === "subsystem" ? "sftp" : "",
    command: undefined,
    pty: { cols: 80, rows: 24, term: "xterm" },
    record: { enabled: true, input: false, on_recording_failure: "terminate", max_bytes: 1024, ...record },
    now: () => Date.now(),
    terminate: (reason) => terminated.push(reason),
    log: () => undefined,
  });
  return { audit, appended, closed, terminated };
}

/** Whether `onDrain` calls back within a few ticks. */
async function drains(onDrain: (fn: () => void) => void): Promise<boolean> {
  let called = false;
  onDrain(() => {
    called = true;
  });
  await new Promise((r) => setTimeout(r, 20));
  return called;
}

describe("max_bytes under on_recording_failure", () => {
  it("terminate (default): the output that reaches the cap ends the session and blocks both taps", async () => {
    const { audit, appended, closed, terminated } = setup({});
    expect(audit.down?.write(Buffer.alloc(1000, 0x61))).toBe(true);
    expect(audit.down?.write(Buffer.alloc(1000, 0x62))).toBe(false);
    expect(terminated).toHaveLength(1);
    expect(terminated[0]).toContain("recording limit reached");
    expect(appended).toEqual([
      expect.objectContaining({
        type: "recording_failed",
        result: "terminate",
        data: { channel: 1, error: "max_bytes", reason: "max_bytes", max_bytes: 1024 },
      }),
    ]);
    // Nothing more is let through in any direction, and the relay is never released.
    expect(audit.down?.write(Buffer.from("x"))).toBe(false);
    expect(audit.stderr?.write(Buffer.from("x"))).toBe(false);
    expect(audit.up?.write(Buffer.from("x"))).toBe(false);
    expect(await drains((fn) => audit.down?.onDrain(fn))).toBe(false);
    expect(await drains((fn) => audit.up?.onDrain(fn))).toBe(false);
    expect(terminated).toHaveLength(1);
    // Once the user's channel has closed, the held relay is let go (its bytes go nowhere) so the
    // upstream channel can end; still nothing more is recorded.
    let resumed = 0;
    audit.down?.onDrain(() => resumed++);
    audit.release();
    expect(resumed).toBe(1);
    expect(audit.down?.write(Buffer.from("after"))).toBe(true);
    await audit.close({ up: 1, down: 2000 });
    expect(closed).toEqual([expect.objectContaining({ status: "truncated" })]);
  });

  it("terminate: recorded input reaching the cap ends the session too", () => {
    const { audit, appended, terminated } = setup({ input: true });
    for (let i = 0; i < 100 && terminated.length === 0; i++) audit.up?.write(Buffer.alloc(100, 0x69));
    expect(terminated).toHaveLength(1);
    expect(appended[0]).toMatchObject({ type: "recording_failed", data: { error: "max_bytes" } });
    expect(audit.up?.write(Buffer.from("x"))).toBe(false);
  });

  it("terminate: stderr output counts like stdout", () => {
    const { audit, terminated } = setup({});
    audit.stderr?.write(Buffer.alloc(2000));
    expect(terminated).toHaveLength(1);
  });

  it("continue: audits recording_failed with reason max_bytes once and goes on unrecorded", async () => {
    const { audit, appended, closed, terminated } = setup({ on_recording_failure: "continue", input: true });
    for (let i = 0; i < 50; i++) {
      expect(audit.down?.write(Buffer.alloc(100))).toBe(true);
      expect(audit.up?.write(Buffer.alloc(100))).toBe(true);
    }
    expect(terminated).toEqual([]);
    expect(appended).toEqual([
      expect.objectContaining({ type: "recording_failed", result: "continue", data: expect.objectContaining({ reason: "max_bytes" }) }),
    ]);
    expect(await drains((fn) => audit.down?.onDrain(fn))).toBe(true);
    await audit.close({ up: 5000, down: 5000 });
    expect(closed).toEqual([expect.objectContaining({ status: "truncated" })]);
  });
});

describe("an sftp subsystem that does not speak SFTP", () => {
  const shell = Buffer.from("id; cat /etc/shadow\n");

  it("yields one transfer_unparsed event and terminates by default", async () => {
    const { audit, appended, terminated } = setup({}, "subsystem");
    audit.up?.write(shell);
    expect(appended).toEqual([
      expect.objectContaining({
        type: "transfer_unparsed",
        result: "terminate",
        data: { channel: 1, protocol: "sftp", reason: "oversized" },
      }),
    ]);
    expect(terminated).toHaveLength(1);
    expect(audit.up?.write(Buffer.from("x"))).toBe(false);
    expect(audit.down?.write(Buffer.from("x"))).toBe(false);
    expect(await drains((fn) => audit.down?.onDrain(fn))).toBe(false);
  });

  it("with on_unparsed: continue, audits it and carries on", () => {
    const { audit, appended, terminated } = setup({ on_unparsed: "continue" }, "subsystem");
    audit.up?.write(shell);
    audit.down?.write(Buffer.from("uid=0(root)\n"));
    expect(appended.map((e) => e.type)).toEqual(["transfer_unparsed"]);
    expect(terminated).toEqual([]);
    expect(audit.up?.write(Buffer.from("x"))).toBe(true);
  });

  it("a real SFTP start is not flagged", () => {
    const { audit, appended, terminated } = setup({}, "subsystem");
    audit.up?.write(Buffer.from("0000000501" + "00000003", "hex"));
    audit.down?.write(Buffer.from("0000000502" + "00000003", "hex"));
    expect(appended).toEqual([]);
    expect(terminated).toEqual([]);
  });
});

describe("audit writes that fail", () => {
  it("never throw into the relay: the session is terminated instead", () => {
    const { audit, terminated } = setup({}, "shell", { appendThrows: true });
    expect(() => audit.down?.write(Buffer.alloc(2000))).not.toThrow();
    expect(terminated.length).toBeGreaterThanOrEqual(1);
  });
});
