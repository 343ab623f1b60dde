/**
 * Lockout and rate limits (`auth.lockout`): failures counted per uid and per source address in the
 * state DB over a sliding window. A locked uid or source gets the same generic refusal as a wrong
 * password, and the factors are not even checked.
 */
import { join } from "node:path";
import Database from "better-sqlite3";

export interface LockoutSettings {
  readonly maxFailures: number;
  /** Sliding window, ms. */
  readonly withinMs: number;
  /** How long a uid stays locked after the failure that locked it, ms. */
  readonly lockForMs: number;
  readonly maxFailuresPerSource: number;
}

export interface Lockout {
  /** Whether `uid` or `source` is locked at `nowMs`. */
  locked(uid: string, source: string, nowMs: number): { uid: boolean; source: boolean };
  /** Counts a failure; returns whether this failure locked the uid or the source. */
  fail(uid: string, source: string, nowMs: number): { lockedUid: boolean; lockedSource: boolean };
  /** A completed login clears the uid's failures. */
  succeed(uid: string): void;
  /** Lifts a lockout; returns how many failures were forgotten. */
  unlock(uid: string): number;
  close(): void;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS auth_failures (uid TEXT NOT NULL, source TEXT NOT NULL, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS auth_failures_uid ON auth_failures(uid, at);
CREATE INDEX IF NOT EXISTS auth_failures_source ON auth_failures(source, at);
`;

/** Opens the lockout counters in `stateDir/state.db`. */
export function openLockout(stateDir: string, s: LockoutSettings): Lockout {
  const db = new Database(join(stateDir, "state.db"));
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  db.exec(SCHEMA);
  const recentForUid = db.prepare<[string, number], { at: number }>(
    "SELECT at FROM auth_failures WHERE uid = ? AND at > ? ORDER BY at DESC LIMIT 1000",
  );
  const bySource = db.prepare<[string, number], { n: number }>("SELECT COUNT(*) AS n FROM auth_failures WHERE source = ? AND at > ?");
  /** Locked iff some `within`-long window holds max_failures failures and its last one is less than lock_for ago. */
  const lockedAt = (uid: string, source: string, now: number) => {
    const at = recentForUid.all(uid, now - s.lockForMs - s.withinMs).map((r) => r.at);
    let uidLocked = false;
    for (let i = 0; i + s.maxFailures - 1 < at.length && !uidLocked; i++) {
      const newest = at[i] as number;
      const oldest = at[i + s.maxFailures - 1] as number;
      uidLocked = newest - oldest <= s.withinMs && now - newest < s.lockForMs;
    }
    const sourceLocked = (bySource.get(source, now - s.withinMs)?.n ?? 0) >= s.maxFailuresPerSource;
    return { uid: uidLocked, source: sourceLocked };
  };
  return {
    locked: lockedAt,
    fail(uid, source, now) {
      const before = lockedAt(uid, source, now);
      db.prepare("INSERT INTO auth_failures (uid, source, at) VALUES (?, ?, ?)").run(uid, source, now);
      db.prepare("DELETE FROM auth_failures WHERE at < ?").run(now - Math.max(s.withinMs, s.lockForMs) * 2);
      const after = lockedAt(uid, source, now);
      return { lockedUid: !before.uid && after.uid, lockedSource: !before.source && after.source };
    },
    succeed(uid) {
      db.prepare("DELETE FROM auth_failures WHERE uid = ?").run(uid);
    },
    unlock(uid) {
      return db.prepare("DELETE FROM auth_failures WHERE uid = ?").run(uid).changes;
    },
    close: () => db.close(),
  };
}
