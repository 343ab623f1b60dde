/** The per-connection audit guard: a refused write is remembered and reported, never thrown into ssh2 handlers. */
import { describe, expect, it } from "vitest";
import { type AuditSink, AuditWriteError } from "../../src/audit/store.ts";
import { guardAudit } from "../../src/ssh/connection.ts";

const failing = (err: Error, healthy = true): AuditSink => ({
  append: () => {
    throw err;
  },
  startSession: () => {
    throw err;
  },
  endSession: () => {
    throw err;
  },
  recordingStarted: () => {
    throw err;
  },
  recordingClosed: () => {
    throw err;
  },
  flush: () => undefined,
  writable: () => healthy,
  healthy: () => ({ ok: healthy, detail: "store" }),
});

describe("guardAudit", () => {
  it("catches AuditWriteError from every must-not-lose call, remembers the first, reports each", () => {
    const first = new AuditWriteError("append login", "SQLITE_BUSY", "database is locked");
    const seen: AuditWriteError[] = [];
    const g = guardAudit(failing(first), (e) => seen.push(e));
    expect(g.healthy()).toEqual({ ok: true, detail: "store" });
    g.append({ type: "login", uid: "u" });
    g.startSession({ id: "s", uid: "u", account: "a", target: "t", source: "s" });
    g.endSession("s", { result: "ok", upBytes: 0, downBytes: 0, exitStatus: 0 });
    g.recordingStarted("s", 1, "/r");
    g.recordingClosed("s", 1, { sha256: "0", bytes: 0, status: "complete" });
    expect(seen).toHaveLength(5);
    expect(g.failure()).toBe(first);
    expect(g.healthy().ok).toBe(false);
    expect(g.healthy().detail).toContain("SQLITE_BUSY");
    expect(g.writable()).toBe(false);
  });

  it("rethrows anything that is not an audit write error (a bug must not be mistaken for a full disk)", () => {
    const g = guardAudit(failing(new TypeError("Do not know how to serialize a BigInt")), () => undefined);
    expect(() => g.append({ type: "exec", data: { n: 1n } })).toThrow(TypeError);
    expect(g.failure()).toBeUndefined();
  });

  it("is not healthy when the store is not, even before a write of its own failed", () => {
    const g = guardAudit(failing(new Error("x"), false), () => undefined);
    expect(g.healthy()).toEqual({ ok: false, detail: "store" });
  });
});
