/**
 * Source keys (IPv4-mapped, IPv6 /64) and the lockout's bounded bookkeeping, against a real SQLite
 * state DB in a temp dir.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { displayAddress, type Lockout, MAX_LOCKED_KEYS, openLockout, sourceKey } from "../../src/auth/index.ts";

const dirs: string[] = [];
const opened: Lockout[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), "varco-lockout-"));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const l of opened.splice(0)) l.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const SETTINGS = { maxFailures: 5, withinMs: 15 * 60_000, lockForMs: 15 * 60_000, maxFailuresPerSource: 30 };
const T0 = Date.UTC(2026, 10, 28, 9, 0, 0);
function open(settings = SETTINGS): { lockout: Lockout; rows: () => number } {
  const dir = tmp();
  const lockout = openLockout(dir, settings);
  opened.push(lockout);
  const rows = () => {
    const db = new Database(join(dir, "state.db"), { readonly: true });
    try {
      return (db.prepare("SELECT COUNT(*) AS n FROM auth_failures").get() as { n: number }).n;
    } finally {
      db.close();
    }
  };
  return { lockout, rows };
}

describe("sourceKey / displayAddress", () => {
  it("maps IPv4-mapped IPv6 in any spelling to the IPv4 address", async () => {
    for (const a of [
      "::ffff:1.2.3.4",
      "::FFFF:1.2.3.4",
      "0:0:0:0:0:ffff:1.2.3.4",
      "::ffff:102:304",
      "::ffff:0102:0304",
      "::ffff:1.2.3.4%eth0",
    ]) {
      expect(sourceKey(a), a).toBe("1.2.3.4");
      expect(displayAddress(a), a).toBe("1.2.3.4");
    }
    expect(sourceKey("1.2.3.4")).toBe("1.2.3.4");
    expect(displayAddress("1.2.3.4")).toBe("1.2.3.4");
  });
  it("counts IPv6 per /64, canonical lower-case compressed", async () => {
    expect(sourceKey("2001:DB8:0:0:1::1")).toBe("2001:db8::/64");
    expect(sourceKey("2001:db8:1:2:3:4:5:6")).toBe("2001:db8:1:2::/64");
    expect(sourceKey("2001:0DB8:0001:0002:ffff:ffff:ffff:ffff")).toBe("2001:db8:1:2::/64");
    expect(sourceKey("2001:db8:1:3::1")).toBe("2001:db8:1:3::/64");
    expect(sourceKey("::1")).toBe("::/64");
    // An IPv6 address that only looks like a mapped one (not ::ffff:0:0/96) stays IPv6.
    expect(sourceKey("::fffe:1.2.3.4")).toBe("::/64");
    expect(sourceKey("64:ff9b::1.2.3.4")).toBe("64:ff9b::/64");
    expect(displayAddress("2001:DB8::1")).toBe("2001:DB8::1");
  });
  it("keeps a zone id: link-local networks on two interfaces are different", async () => {
    expect(sourceKey("fe80::1%eth0")).toBe("fe80::%eth0/64");
    expect(sourceKey("FE80::abcd:1%eth0")).toBe("fe80::%eth0/64");
    expect(sourceKey("fe80::1%eth1")).not.toBe(sourceKey("fe80::1%eth0"));
    expect(displayAddress("fe80::1%eth0")).toBe("fe80::1%eth0");
  });
  it("returns anything unparsable as is", async () => {
    for (const a of ["", "not an address", "1.2.3", "01.2.3.4", "0x7f.1", "1.2.3.4.5", "::ffff:1.2.3.4.5", "2001:db8::g", "unix:/run/x"]) {
      expect(sourceKey(a), a).toBe(a);
      expect(displayAddress(a), a).toBe(a);
    }
  });
});

describe("lockout per source network", () => {
  const fill = async (l: Lockout, n: number, addr: (i: number) => string, uid = (i: number) => `u${i}`) => {
    const res = [];
    for (let i = 0; i < n; i++) res.push(await l.fail(uid(i), addr(i), T0 + i));
    return res;
  };

  it("locks a whole /64 from failures spread over its addresses, and not the neighbour /64", async () => {
    const { lockout } = open();
    const res = await fill(lockout, 30, (i) => `2001:db8:1:2:${i.toString(16)}::${i + 1}`);
    expect(res.at(-1)).toEqual({ lockedUid: false, lockedSource: true, wasLocked: false });
    expect(res.slice(0, -1).every((r) => !r.lockedSource)).toBe(true);
    const now = T0 + 100;
    expect((await lockout.locked("fresh", "2001:db8:1:2:dead:beef:0:1", now)).source).toBe(true);
    expect((await lockout.locked("fresh", "2001:DB8:1:2::1", now)).source).toBe(true);
    expect((await lockout.locked("fresh", "2001:db8:1:3::1", now)).source).toBe(false);
    expect((await lockout.locked("fresh", "2001:db8:1:1::1", now)).source).toBe(false);
    expect((await lockout.locked("fresh", "1.2.3.4", now)).source).toBe(false);
    // Sliding window: after `within`, the /64 is free again.
    expect((await lockout.locked("fresh", "2001:db8:1:2::1", T0 + 30 + SETTINGS.withinMs)).source).toBe(false);
  });

  it("counts ::ffff:a.b.c.d and a.b.c.d as one source", async () => {
    const { lockout } = open();
    await fill(lockout, 15, () => "::ffff:10.0.0.7");
    await fill(
      lockout,
      14,
      () => "10.0.0.7",
      (i) => `v${i}`,
    );
    expect((await lockout.locked("x", "10.0.0.7", T0 + 50)).source).toBe(false);
    expect((await lockout.fail("v99", "::FFFF:10.0.0.7", T0 + 50)).lockedSource).toBe(true);
    expect((await lockout.locked("x", "10.0.0.7", T0 + 51)).source).toBe(true);
    expect((await lockout.locked("x", "::ffff:a00:7", T0 + 51)).source).toBe(true);
    expect((await lockout.locked("x", "10.0.0.8", T0 + 51)).source).toBe(false);
  });

  it("locks a uid after max_failures and lifts it after lock_for, not extended by attempts while locked", async () => {
    const { lockout } = open();
    const res = await fill(
      lockout,
      5,
      (i) => `10.0.${i}.1`,
      () => "mario",
    );
    expect(res.map((r) => r.lockedUid)).toEqual([false, false, false, false, true]);
    expect((await lockout.locked("mario", "192.0.2.1", T0 + 10)).uid).toBe(true);
    for (let i = 0; i < 100; i++) expect((await lockout.fail("mario", "192.0.2.1", T0 + 60_000 + i)).wasLocked).toBe(true);
    expect((await lockout.locked("mario", "192.0.2.1", T0 + 4 + SETTINGS.lockForMs - 1)).uid).toBe(true);
    expect((await lockout.locked("mario", "192.0.2.1", T0 + 4 + SETTINGS.lockForMs)).uid).toBe(false);
    expect(await lockout.unlock("mario")).toBe(5);
  });
});

describe("attempts while locked", () => {
  it("10 000 attempts while the source is locked add no auth_failures row and sum into one counter", async () => {
    const { lockout, rows } = open();
    for (let i = 0; i < 30; i++) await lockout.fail(`u${i}`, "2001:db8:9:9::1", T0 + i);
    expect(rows()).toBe(30);
    const before = rows();
    for (let i = 0; i < 10_000; i++) {
      // Every attempt a different address of the /64 and a different typed uid.
      const r = await lockout.fail(`victim${i}`, `2001:db8:9:9:${(i % 65536).toString(16)}::7`, T0 + 1000 + i);
      expect(r.wasLocked).toBe(true);
      expect(r.lockedSource || r.lockedUid).toBe(false);
    }
    expect(rows()).toBe(before);
    expect(lockout.takeLockedAttempts()).toEqual([
      { uid: "", source: "2001:db8:9:9::/64", count: 10_000, firstAt: T0 + 1000, lastAt: T0 + 10_999 },
    ]);
    // Drained.
    expect(lockout.takeLockedAttempts()).toEqual([]);
  });

  it("attempts on a locked uid are counted per (uid, source) and stored nowhere", async () => {
    const { lockout, rows } = open();
    for (let i = 0; i < 5; i++) await lockout.fail("mario", "198.51.100.1", T0 + i);
    for (let i = 0; i < 7; i++) await lockout.fail("mario", "::ffff:198.51.100.1", T0 + 10 + i);
    await lockout.fail("mario", "2001:db8::5", T0 + 20);
    await lockout.lockedAttempt("mario", "2001:db8::6", T0 + 21);
    expect(rows()).toBe(5);
    const got = lockout.takeLockedAttempts().sort((a, b) => a.source.localeCompare(b.source));
    expect(got).toEqual([
      { uid: "mario", source: "198.51.100.1", count: 7, firstAt: T0 + 10, lastAt: T0 + 16 },
      { uid: "mario", source: "2001:db8::/64", count: 2, firstAt: T0 + 20, lastAt: T0 + 21 },
    ]);
  });

  it("stays bounded when every attempt uses a new uid and a new /64 (1e6 calls)", async () => {
    const { lockout, rows } = open({ ...SETTINGS, maxFailures: 1 });
    // Lock 3 uids; then hammer them from a million /64s, none of which is locked.
    for (const u of ["a", "b", "c"]) await lockout.fail(u, "192.0.2.1", T0);
    const r0 = rows();
    for (let i = 0; i < 1_000_000; i++) {
      const u = ["a", "b", "c"][i % 3] as string;
      await lockout.lockedAttempt(u, `2001:db8:${(i >>> 16).toString(16)}:${(i & 0xffff).toString(16)}::1`, T0 + 1 + i);
    }
    expect(rows()).toBe(r0);
    const got = lockout.takeLockedAttempts();
    expect(got.length).toBeLessThanOrEqual(MAX_LOCKED_KEYS + 1);
    expect(got.reduce((n, c) => n + c.count, 0)).toBe(1_000_000);
    const overflow = got.find((c) => c.source === "*");
    expect(overflow?.uid).toBe("");
    expect(overflow?.count).toBe(1_000_000 - MAX_LOCKED_KEYS);
  }, 120_000);
});
