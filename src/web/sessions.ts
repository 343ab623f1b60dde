/**
 * Web logins kept on the server: a random id (256 bits, base64url) in the cookie, the login's
 * state in a bounded map keyed by the id's SHA-256, forgotten after `idleMs` without a request or
 * `maxAgeMs` after the login. Each login has its own CSRF token (a synchronizer token, RFC-less:
 * OWASP CSRF cheat sheet), compared in constant time.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/** Who may do what in the console. */
export type WebRole = "auditor" | "admin";

export interface WebSession {
  readonly uid: string;
  readonly role: WebRole;
  /** The synchronizer token every POST of this login must carry. */
  readonly csrf: string;
  /** The client's address at login. */
  readonly source: string;
  readonly createdAt: number;
  lastSeen: number;
}

export interface WebSessions {
  /** Makes a login; returns its cookie value and state. The oldest login is dropped past `max`. */
  create(uid: string, role: WebRole, source: string): { id: string; session: WebSession };
  /** The login of a cookie value, if it exists and has not expired (then its idle clock restarts). */
  get(id: string | undefined): WebSession | undefined;
  /** Forgets a login (logout). */
  delete(id: string | undefined): void;
  /** Live logins now. */
  size(): number;
}

/** A random token (32 bytes, base64url). */
export function randomToken(): string {
  return randomBytes(32).toString("base64url");
}

/** Constant-time equality of two strings of any length (compares their SHA-256). */
export function sameToken(a: string | undefined, b: string | undefined): boolean {
  if (a === undefined || b === undefined || a.length === 0 || b.length === 0) return false;
  const ha = createHash("sha256").update(a).digest();
  const hb = createHash("sha256").update(b).digest();
  return timingSafeEqual(ha, hb);
}

const key = (id: string) => createHash("sha256").update(id).digest("base64url");
/** A cookie value the console could have made: 43 base64url characters. */
const ID = /^[A-Za-z0-9_-]{43}$/;

/**
 * Creates the login store.
 * @param o.idleMs a login unused this long is gone; `maxAgeMs` (default 12 h) bounds it anyway.
 * @param o.max most logins kept at once (default 1000).
 */
export function createWebSessions(o: { idleMs: () => number; maxAgeMs?: number; max?: number; now: () => number }): WebSessions {
  const map = new Map<string, WebSession>();
  const maxAge = o.maxAgeMs ?? 12 * 3_600_000;
  const max = o.max ?? 1000;
  const expired = (s: WebSession, now: number) => now - s.lastSeen > o.idleMs() || now - s.createdAt > maxAge;
  const sweep = () => {
    const now = o.now();
    for (const [k, s] of map) if (expired(s, now)) map.delete(k);
  };
  return {
    create(uid, role, source) {
      sweep();
      while (map.size >= max) {
        const oldest = map.keys().next().value;
        if (oldest === undefined) break;
        map.delete(oldest);
      }
      const id = randomToken();
      const now = o.now();
      const session: WebSession = { uid, role, csrf: randomToken(), source, createdAt: now, lastSeen: now };
      map.set(key(id), session);
      return { id, session };
    },
    get(id) {
      if (!id || !ID.test(id)) return undefined;
      const k = key(id);
      const s = map.get(k);
      if (!s) return undefined;
      const now = o.now();
      if (expired(s, now)) {
        map.delete(k);
        return undefined;
      }
      s.lastSeen = now;
      return s;
    },
    delete(id) {
      if (id && ID.test(id)) map.delete(key(id));
    },
    size: () => map.size,
  };
}
