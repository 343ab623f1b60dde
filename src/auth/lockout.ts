/**
 * Lockout and rate limits (`auth.lockout`): failures counted per uid and per source network
 * ({@link sourceKey}: an IPv4 address, or an IPv6 /64) in the state DB over a sliding window. A
 * locked uid or source gets the same generic refusal as a wrong password, and the factors are not
 * even checked.
 *
 * Work and storage stay bounded under attack: once the uid or the source is locked, further
 * refused attempts add no `auth_failures` row; they only bump an in-memory counter per
 * (uid or "", source key), capped at {@link MAX_LOCKED_KEYS} keys, that the server drains with
 * {@link Lockout.takeLockedAttempts} to write one summary audit row per key and period. These
 * counters stay per node; the failures themselves are in the {@link AuthState} (shared by every
 * gateway on a PostgreSQL state, so an attacker gets one budget for the whole cluster).
 */
import { type AuthState, openSqliteState } from "../state/index.ts";
import { sourceKey } from "./source.ts";

export interface LockoutSettings {
  readonly maxFailures: number;
  /** Sliding window, ms. */
  readonly withinMs: number;
  /** How long a uid stays locked after the failure that locked it, ms. */
  readonly lockForMs: number;
  readonly maxFailuresPerSource: number;
}

/**
 * Attempts refused while already locked, summed since the last drain. `uid` is "" when the
 * source was locked (the typed uid does not matter then, and is attacker-chosen); `source` is the
 * source key (`1.2.3.4`, `2001:db8::/64`), or "*" for the overflow bucket once
 * {@link MAX_LOCKED_KEYS} keys are held. Times are ms since the epoch.
 */
export interface LockedAttempts {
  readonly uid: string;
  readonly source: string;
  readonly count: number;
  readonly firstAt: number;
  readonly lastAt: number;
}

export interface Lockout {
  /** Whether `uid` or `source` (a raw peer address; counted by its {@link sourceKey}) is locked at `nowMs`. */
  locked(uid: string, source: string, nowMs: number): Promise<{ uid: boolean; source: boolean }>;
  /**
   * Counts a failure; returns whether this failure locked the uid or the source, and whether one
   * of them was locked already (`wasLocked`). A failure that locks the uid also forgets its
   * remembered second factors ({@link AuthState.forgetRemembered}). A failure while locked is not stored: it goes to
   * {@link Lockout.lockedAttempt} instead, and the caller should write no per-attempt audit row.
   */
  fail(uid: string, source: string, nowMs: number): Promise<{ lockedUid: boolean; lockedSource: boolean; wasLocked: boolean }>;
  /**
   * Counts a refused attempt made while `uid` or `source` is locked, in bounded memory: no row is
   * written (two indexed reads tell which is locked). Keyed by ("" if the source is locked else uid, source key); past {@link MAX_LOCKED_KEYS}
   * keys, new keys fold into ("", "*").
   */
  lockedAttempt(uid: string, source: string, nowMs: number): Promise<void>;
  /** Returns and forgets the counters of {@link Lockout.lockedAttempt}, for one summary audit row each. */
  takeLockedAttempts(): LockedAttempts[];
  /** Replaces the thresholds (a policy reload); counted failures stay. */
  configure(settings: LockoutSettings): void;
  /** A completed login clears the uid's failures. */
  succeed(uid: string): Promise<void>;
  /** Lifts a lockout; returns how many failures were forgotten. */
  unlock(uid: string): Promise<number>;
  /** Closes the state if this lockout opened it ({@link openLockout}); a shared {@link AuthState} stays open. */
  close(): Promise<void>;
}

/** At most this many (uid, source) counters are held between two drains. */
export const MAX_LOCKED_KEYS = 1000;

/** Opens the lockout counters on a SQLite state in `stateDir/state.db`; `close()` closes it. */
export function openLockout(stateDir: string, settings: LockoutSettings): Lockout {
  return lockoutOn(openSqliteState(stateDir), settings, true);
}

/**
 * The lockout over `state` (either engine). With `owned`, `close()` closes `state`.
 * Every method but {@link Lockout.takeLockedAttempts} and `configure` may reject when the state
 * cannot be reached (the login then fails closed).
 */
export function lockoutOn(state: AuthState, settings: LockoutSettings, owned = false): Lockout {
  let s = settings;
  /** Locked iff some `within`-long window holds max_failures failures and its last one is less than lock_for ago (computed in SQL). */
  const lockedByKey = (uid: string, key: string, now: number) => state.lockState(uid, key, now, s);

  const counters = new Map<string, { uid: string; source: string; count: number; firstAt: number; lastAt: number }>();
  const bump = (uid: string, key: string, now: number) => {
    let id = JSON.stringify([uid, key]);
    if (!counters.has(id) && counters.size >= MAX_LOCKED_KEYS) {
      uid = "";
      key = "*";
      id = JSON.stringify([uid, key]);
    }
    const c = counters.get(id);
    if (c) {
      c.count += 1;
      c.firstAt = Math.min(c.firstAt, now);
      c.lastAt = Math.max(c.lastAt, now);
    } else counters.set(id, { uid, source: key, count: 1, firstAt: now, lastAt: now });
  };
  const lockedAttempt = async (uid: string, source: string, now: number, known?: { uid: boolean; source: boolean }) => {
    const key = sourceKey(source);
    const l = known ?? (await lockedByKey(uid, key, now));
    // The typed uid is attacker-chosen: with the source locked it must not multiply the keys.
    bump(l.source || !l.uid ? "" : uid, key, now);
  };

  return {
    locked: (uid, source, now) => lockedByKey(uid, sourceKey(source), now),
    async fail(uid, source, now) {
      const key = sourceKey(source);
      const before = await lockedByKey(uid, key, now);
      if (before.uid || before.source) {
        await lockedAttempt(uid, source, now, before);
        return { lockedUid: false, lockedSource: false, wasLocked: true };
      }
      await state.addFailure(uid, key, now, now - Math.max(s.withinMs, s.lockForMs) * 2);
      const after = await lockedByKey(uid, key, now);
      // A lockout that trips revokes the uid's remembered second factors (auth.totp.remember).
      if (after.uid) await state.forgetRemembered(uid);
      return { lockedUid: after.uid, lockedSource: after.source, wasLocked: false };
    },
    lockedAttempt: (uid, source, now) => lockedAttempt(uid, source, now),
    takeLockedAttempts() {
      const out = [...counters.values()];
      counters.clear();
      return out;
    },
    configure(next) {
      s = next;
    },
    async succeed(uid) {
      await state.forgetFailures(uid);
    },
    unlock: (uid) => state.forgetFailures(uid),
    close: async () => {
      if (owned) await state.close();
    },
  };
}
