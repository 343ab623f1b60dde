/**
 * The web console as a hono app, pure of I/O besides its injected dependencies (audit store and
 * query, the gateway's live sessions, the lockout). Security properties, all tested in
 * test/e2e/web.test.ts:
 * - every response: a strict CSP (no inline script or style), frame-ancestors none, nosniff,
 *   Referrer-Policy no-referrer; authenticated responses are `Cache-Control: no-store`;
 * - login: the gateway's own login state machine (auth.ts), then a random session id in a cookie
 *   (`HttpOnly`, `SameSite=Strict`, `Secure` and the `__Host-` prefix under TLS), idle expiry;
 * - every POST: a same-origin `Origin` header and the login's synchronizer token (the login form:
 *   a double-submit token), compared in constant time;
 * - admins only: live sessions, ending one, lifting a lockout;
 * - every view of a session page or a recording is an audit event (`web_view`).
 */
import { closeSync, createReadStream, openSync, readSync, statSync } from "node:fs";
import { Readable } from "node:stream";
import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import type { AuditEvent, AuditEventInput, AuditSession, RecordingRow } from "../audit/index.ts";
import type { SearchHit, SessionQuery } from "../audit/query.ts";
import { isRawRecording } from "../audit/raw.ts";
import type { Logger } from "../obs/index.ts";
import { printable } from "../obs/printable.ts";
import { parseDurationMs } from "../policy/index.ts";
import type { LiveSessionInfo } from "../ssh/index.ts";
import { CONSOLE_CSS, CONSOLE_JS } from "./assets.ts";
import { type WebLoginRuntime, type WebSettings, webEvent, webLogin } from "./auth.ts";
import { html } from "./escape.ts";
import { hostAllowed } from "./hosts.ts";
import { clientAddress } from "./proxy.ts";
import { createWebSessions, randomToken, sameToken, type WebSession } from "./sessions.ts";
import {
  loginPage,
  nodeAges,
  nodeSelect,
  page,
  type RecordingView,
  sessionPage,
  sessionTable,
  shortTime,
  type TimelineEntry,
  timelineOf,
  type Viewer,
} from "./views.ts";

/** A running session as the live page shows it (the gateway's own shape). */
export type { LiveSessionInfo };

/** What the console needs of the gateway for the live page (admins). */
export interface LiveControl {
  liveSessions(): LiveSessionInfo[];
  /** Ends a running session, telling its user `reason`; false when no such session runs. */
  terminate(id: string, byUid: string, reason: string): boolean;
}

/** A gateway node whose trail the console reads (a PostgreSQL state: this node and each other node's mirror). */
export interface WebNodeInfo {
  readonly node: string;
  /** This gateway (its own audit.db, always current). */
  readonly local: boolean;
  /** When the mirror last caught up with PostgreSQL (ISO 8601; null: never, or the local node). */
  readonly syncedAt: string | null;
  /** Why the last refresh failed (null: it worked). */
  readonly error: string | null;
  /** The first chain break seen in the mirrored trail (null: none). */
  readonly chainIssue: string | null;
}

/** The chain check of a session's segment in a mirrored trail. */
export interface SegmentCheck {
  readonly ok: boolean;
  /** The session's events checked. */
  readonly events: number;
  readonly reason: string;
}

/** The read side of the audit the console uses (src/audit/query.ts and the store; with a PostgreSQL state, the other nodes' mirrors too). */
export interface WebAuditRead {
  /** A page of sessions, newest first; `node` keeps one node's (a PostgreSQL state; sessions then carry their `node`). */
  sessions(q: SessionQuery & { node?: string | undefined }): { sessions: AuditSession[]; total: number };
  /**
   * Searches the index; `indexing` is true when the index had not caught up with the trail in time
   * (the hits are those indexed so far). @throws SearchTextError for a text shorter than 3 characters.
   */
  search(text: string, limit: number): Promise<{ hits: Array<SearchHit & { node?: string }>; more: boolean; indexing?: boolean }>;
  /** Hashes the recording file (off the event loop) and compares with its chained event. */
  checkRecording(sessionId: string, channel: number, path: string): Promise<RecordingView["check"]>;
  /** The session with this id (or unique prefix), this node's first; its `node` is set with a PostgreSQL state. */
  findSession(idOrPrefix: string): AuditSession | undefined;
  /** The session's events from the trail of `node` (default: this node). */
  sessionEvents(id: string, node?: string): AuditEvent[];
  recordings(sessionId: string, node?: string): RecordingRow[];
  /** Every node read (a PostgreSQL state only; absent: one node). */
  nodes?(): WebNodeInfo[];
  /** The chain check of a session's segment in `node`'s mirror. */
  segmentCheck?(node: string, sessionId: string): SegmentCheck;
}

export interface WebConsoleDeps {
  /** The policy's `web` block in force (read per request, so a reload applies to groups and idle time). */
  readonly settings: () => WebSettings;
  readonly runtime: () => WebLoginRuntime;
  /** Appends an audit event. */
  readonly audit: (e: AuditEventInput) => void;
  readonly read: WebAuditRead;
  readonly live?: LiveControl | undefined;
  /** Lifts a lockout of the uid as typed; returns the canonical uid and how many failures were forgotten. */
  readonly unlock?: ((typedUid: string) => Promise<{ uid: string; forgotten: number }>) | undefined;
  /** The asciinema-player bundle. */
  readonly player: { js: Buffer; css: Buffer };
  /** Served over TLS: cookies get `Secure` and the `__Host-` prefix, responses HSTS. */
  readonly tls: boolean;
  readonly now: () => number;
  readonly logger?: Logger | undefined;
  /** Maps the transfer fields of a `file` event (src/audit/query.ts `transferOf`). */
  readonly transferOf: Parameters<typeof timelineOf>[1];
}

/** The Content-Security-Policy of every response. `wasm-unsafe-eval`: the player's terminal emulator is WebAssembly (no JS eval). */
export const CSP =
  "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/** Largest request body accepted (forms only). */
const MAX_BODY = 16 * 1024;
/** Logins being checked at once; more get 503 (bounded work before authentication). */
const MAX_LOGINS_IN_FLIGHT = 16;
const PAGE = 50;
/** At most one log line per this many ms for requests refused by `web.hostnames`. */
const MISDIRECTED_LOG_MS = 60_000;
const SESSION_ID = /^[A-Za-z0-9-]{1,64}$/;

type Env = { Variables: { web: WebSession; sid: string } };

/** The address of the peer (node-server's IncomingMessage), or "unknown". */
function peer(c: Context): string {
  const env = c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined;
  return env?.incoming?.socket?.remoteAddress ?? "unknown";
}

/** The host of an absolute-form request target (`GET http://host/path`), "" when unreadable; undefined for the usual origin form. */
function absoluteTargetHost(c: Context): string | undefined {
  const env = c.env as { incoming?: { url?: string } } | undefined;
  const target = env?.incoming?.url ?? "";
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(target)) return undefined;
  try {
    return new URL(target).host;
  } catch {
    return "";
  }
}

/** Creates the app. Mount it with @hono/node-server (listen.ts). */
export function createWebApp(deps: WebConsoleDeps): Hono<Env> {
  const app = new Hono<Env>();
  const sessions = createWebSessions({ idleMs: () => deps.settings().idle_timeout, now: deps.now });
  const cookieName = deps.tls ? "__Host-varco" : "varco_session";
  const loginCookie = deps.tls ? "__Host-varco_login" : "varco_login";
  const cookieOpts = { httpOnly: true, sameSite: "Strict" as const, secure: deps.tls, path: "/" };
  let loginsInFlight = 0;
  /** The client's address: the TCP peer, or what trusted reverse proxies say it is (proxy.ts). */
  const source = (c: Context): string => clientAddress(peer(c), c.req.header("x-forwarded-for"), deps.settings().trusted_proxies);

  app.use("*", async (c, next) => {
    await next();
    const h = c.res.headers;
    h.set("Content-Security-Policy", CSP);
    h.set("X-Frame-Options", "DENY");
    h.set("X-Content-Type-Options", "nosniff");
    h.set("Referrer-Policy", "no-referrer");
    h.set("Cross-Origin-Opener-Policy", "same-origin");
    h.set("Cross-Origin-Resource-Policy", "same-origin");
    h.set("Permissions-Policy", "camera=(), microphone=(), geolocation=()");
    if (deps.tls) h.set("Strict-Transport-Security", "max-age=31536000");
    if (!c.req.path.startsWith("/assets/")) h.set("Cache-Control", "no-store");
  });
  // Before anything else: a request for a name this console does not answer to (DNS rebinding) gets 421 only.
  let misdirected = 0;
  let misdirectedLogged = 0;
  app.use("*", async (c, next) => {
    const host = c.req.header("host");
    const names = deps.settings().hostnames;
    // An absolute-form request target names the host itself, and a server must use it over Host
    // (RFC 9112 §3.2.2): both must be this console's.
    if (hostAllowed(host, names) && hostAllowed(absoluteTargetHost(c) ?? host, names)) return next();
    // One log line a minute at most, with the count since the last: refusals cost an attacker nothing.
    misdirected += 1;
    if (deps.now() - misdirectedLogged >= MISDIRECTED_LOG_MS) {
      deps.logger?.warn(
        { host: printable(host ?? "", 200), source: source(c), refused: misdirected },
        "web console: refused requests for a host name not in web.hostnames (DNS rebinding?)",
      );
      misdirected = 0;
      misdirectedLogged = deps.now();
    }
    return c.text("misdirected request: this console does not answer to that host name\n", 421);
  });
  app.use("*", bodyLimit({ maxSize: MAX_BODY, onError: (c) => c.text("request body too large", 413) }));
  app.onError((err, c) => {
    deps.logger?.error({ err: err.message, path: c.req.path }, "web console error");
    return c.text("internal error", 500);
  });

  /**
   * Same-origin POSTs only: a browser's `Sec-Fetch-Site` must say `same-origin` (Fetch Metadata; with
   * `Referrer-Policy: no-referrer` Chromium sends `Origin: null` on form posts); without it, the
   * `Origin` must be this console's.
   */
  const sameOrigin = (c: Context): boolean => {
    const site = c.req.header("sec-fetch-site");
    if (site !== undefined) return site === "same-origin";
    const origin = c.req.header("origin");
    const host = c.req.header("host");
    if (!origin || !host) return false;
    return origin === `${deps.tls ? "https" : "http"}://${host}`;
  };

  const asset = (body: string | Buffer, type: string) => (c: Context) => {
    c.header("Content-Type", type);
    c.header("Cache-Control", "public, max-age=3600");
    return c.body(typeof body === "string" ? body : new Uint8Array(body));
  };
  app.get("/assets/console.js", asset(CONSOLE_JS, "text/javascript; charset=utf-8"));
  app.get("/assets/console.css", asset(CONSOLE_CSS, "text/css; charset=utf-8"));
  app.get("/assets/asciinema-player.min.js", asset(deps.player.js, "text/javascript; charset=utf-8"));
  app.get("/assets/asciinema-player.css", asset(deps.player.css, "text/css; charset=utf-8"));

  const showLogin = (c: Context, refused: boolean, status: 200 | 401 | 403 | 503 = 200) => {
    const token = randomToken();
    setCookie(c, loginCookie, token, { ...cookieOpts, maxAge: 600 });
    return c.html(loginPage(token, refused), status);
  };
  app.get("/login", (c) => showLogin(c, false));
  app.post("/login", async (c) => {
    const form = await c.req.parseBody();
    const field = (k: string) => (typeof form[k] === "string" ? (form[k] as string) : "");
    if (!sameOrigin(c) || !sameToken(getCookie(c, loginCookie), field("login_token"))) return c.text("forbidden: bad origin or token", 403);
    if (loginsInFlight >= MAX_LOGINS_IN_FLIGHT) return showLogin(c, true, 503);
    loginsInFlight += 1;
    let r: Awaited<ReturnType<typeof webLogin>>;
    try {
      r = await webLogin(
        deps.runtime(),
        deps.settings(),
        { uid: field("uid").slice(0, 256), password: field("password").slice(0, 1024), code: field("code").slice(0, 64) },
        source(c),
        deps.audit,
        deps.now,
      );
    } finally {
      loginsInFlight -= 1;
    }
    if (!r.ok) {
      deps.logger?.info({ reason: r.reason, source: source(c) }, "web login refused");
      return showLogin(c, true, 401);
    }
    const { id } = sessions.create(r.uid, r.role, source(c));
    deleteCookie(c, loginCookie, cookieOpts);
    setCookie(c, cookieName, id, cookieOpts);
    deps.logger?.info({ uid: r.uid, role: r.role, source: source(c) }, "web login");
    return c.redirect("/sessions", 303);
  });

  // Everything below needs a login.
  app.use("*", async (c, next) => {
    const sid = getCookie(c, cookieName);
    const s = sessions.get(sid);
    if (!s || !sid) {
      if (c.req.method === "GET" && !c.req.path.includes(".") && !c.req.path.endsWith("/json")) return c.redirect("/login", 303);
      return c.text("unauthorized: log in first", 401);
    }
    if (c.req.method !== "GET" && c.req.method !== "HEAD") {
      const form = await c.req.parseBody();
      const token = typeof form.csrf === "string" ? form.csrf : undefined;
      if (!sameOrigin(c) || !sameToken(token, s.csrf)) {
        deps.audit(webEvent({ type: "web_csrf_refused", uid: s.uid, source: source(c), result: "refused", data: { path: c.req.path } }));
        return c.text("forbidden: bad origin or CSRF token", 403);
      }
    }
    c.set("web", s);
    c.set("sid", sid);
    await next();
  });
  const viewer = (c: Context<Env>): Viewer => {
    const s = c.get("web");
    return { uid: s.uid, role: s.role, csrf: s.csrf };
  };
  const adminOnly = (c: Context<Env>) => (c.get("web").role === "admin" ? undefined : c.text("forbidden: admins only", 403));
  const viewed = (c: Context<Env>, what: string, sessionId: string, data: Record<string, unknown> = {}) =>
    deps.audit(webEvent({ type: "web_view", uid: c.get("web").uid, sessionId, source: source(c), result: "ok", data: { what, ...data } }));

  app.post("/logout", (c) => {
    const s = c.get("web");
    sessions.delete(c.get("sid"));
    deleteCookie(c, cookieName, cookieOpts);
    deps.audit(webEvent({ type: "web_logout", uid: s.uid, source: source(c), result: "ok" }));
    return c.redirect("/login", 303);
  });
  app.get("/", (c) => c.redirect("/sessions", 303));

  /** A time filter: a duration ago (24h) or a date; undefined when empty or unreadable. */
  const when = (v: string | undefined): number | undefined => {
    if (!v) return undefined;
    const d = parseDurationMs(v);
    if (d !== undefined) return deps.now() - d;
    const t = Date.parse(v);
    return Number.isNaN(t) ? undefined : t;
  };

  /** The other node that served `s` (undefined: this node, or one node only). */
  const remoteOf = (s: AuditSession): WebNodeInfo | undefined => deps.read.nodes?.().find((n) => !n.local && n.node === s.node);

  app.get("/sessions", (c) => {
    const q = (k: string) => c.req.query(k)?.slice(0, 200) || undefined;
    const offset = Math.max(0, Math.min(1e9, Number.parseInt(q("offset") ?? "0", 10) || 0));
    const nodes = deps.read.nodes?.();
    const filter = {
      user: q("user"),
      target: q("target"),
      result: q("result"),
      sinceMs: when(q("since")),
      untilMs: when(q("until")),
      node: nodes ? q("node") : undefined,
    };
    const { sessions: rows, total } = deps.read.sessions({ ...filter, limit: PAGE, offset });
    const params = (o: number) =>
      new URLSearchParams(
        Object.entries({
          user: q("user"),
          target: q("target"),
          result: q("result"),
          since: q("since"),
          until: q("until"),
          node: filter.node,
          offset: String(o),
        }).filter((e): e is [string, string] => e[1] !== undefined),
      ).toString();
    const input = (name: string, label: string, hint: string) =>
      html`<label>${label} <input name="${name}" value="${q(name) ?? ""}" placeholder="${hint}"></label>`;
    return c.html(
      page(
        "Sessions",
        viewer(c),
        html`<h1>Sessions</h1>
${nodes ? nodeAges(nodes, deps.now()) : ""}
<form method="get" action="/sessions" class="filters">${input("user", "User", "uid")}${input("target", "Target or alias", "vm1")}${input("result", "Result", "ok, terminated…")}${input("since", "Since", "24h or 2026-11-27T10:00Z")}${input("until", "Until", "1h or a date")}${nodes ? nodeSelect(nodes, filter.node) : ""}<button type="submit">Filter</button></form>
<p>${total} sessions${total > 0 ? html`, ${offset + 1}–${offset + rows.length}` : ""}.
${offset > 0 ? html` <a href="/sessions?${params(Math.max(0, offset - PAGE))}">Newer</a>` : ""}
${offset + rows.length < total ? html` <a href="/sessions?${params(offset + PAGE)}" id="older">Older</a>` : ""}</p>
${sessionTable(rows, { node: nodes !== undefined })}`,
      ),
    );
  });

  app.get("/search", async (c) => {
    const text = (c.req.query("q") ?? "").slice(0, 200);
    let body = html``;
    if (text) {
      try {
        const r = await deps.read.search(text, 100);
        const nodes = deps.read.nodes?.();
        body = html`${r.indexing ? html`<p class="note" id="indexing">The search index is still being built: these are the hits indexed so far.</p>` : ""}${nodes ? nodeAges(nodes, deps.now()) : ""}<p>${r.hits.length} hits${r.more ? " (more: refine the text)" : ""}.</p>
<table class="hits"><thead><tr><th>Time</th>${nodes ? html`<th>Node</th>` : ""}<th>Session</th><th>User</th><th>Kind</th><th>Match</th></tr></thead><tbody>
${r.hits.map(
  (h) =>
    html`<tr><td>${shortTime(h.ts)}</td>${nodes ? html`<td class="node">${h.node ?? ""}</td>` : ""}<td>${h.session_id ? html`<a href="/sessions/${encodeURIComponent(h.session_id)}">${h.session_id.slice(0, 8)}</a>` : "-"}</td><td>${h.uid ?? "-"}</td><td>${h.kind}</td><td class="what">${h.snippet}</td></tr>
`,
)}</tbody></table>`;
      } catch (err) {
        body = html`<p class="error">${(err as Error).message}</p>`;
      }
    }
    return c.html(
      page(
        "Search",
        viewer(c),
        html`<h1>Search</h1><form method="get" action="/search" class="filters"><label>Commands, paths, recorded output <input name="q" value="${text}" minlength="3" maxlength="200"></label><button type="submit">Search</button></form>${body}`,
      ),
    );
  });

  const sessionOf = (c: Context<Env>): AuditSession | undefined => {
    const id = c.req.param("id") ?? "";
    return SESSION_ID.test(id) ? deps.read.findSession(id) : undefined;
  };
  const notFound = (c: Context<Env>) => c.html(page("Not found", viewer(c), html`<h1>No such session</h1>`), 404);

  const renderSession = async (c: Context<Env>, s: AuditSession, channelAsked: number | undefined) => {
    const remote = remoteOf(s);
    const events = deps.read.sessionEvents(s.id, s.node);
    const recs = deps.read.recordings(s.id, s.node);
    // Another node's recording: its file is there, not here; only its chained hash is shown (never a local file of that path).
    const segment = remote ? deps.read.segmentCheck?.(remote.node, s.id) : undefined;
    const channel = remote ? undefined : channelAsked;
    const views: RecordingView[] = await Promise.all(
      recs.map(async (row): Promise<RecordingView> => {
        if (!remote) return { row, check: await deps.read.checkRecording(s.id, row.channel, row.path) };
        const chained = chainedRecordingHash(events, row.channel);
        return {
          row,
          remote: remote.node,
          check: {
            ok: Boolean(segment?.ok) && chained !== null,
            reason:
              chained === null ? "no chained recording event (still open, or its event is missing)" : `the file is on node ${remote.node}`,
            expected: chained,
            found: null,
          },
        };
      }),
    );
    const num = (k: string, dflt: number, max: number) => {
      const v = Number(c.req.query(k));
      return Number.isFinite(v) && v > 0 && v <= max ? v : dflt;
    };
    // Only a terminal recording plays; a raw output recording is offered for download only.
    const chosen = channel === undefined ? undefined : recs.find((r) => r.channel === channel && !isRawRecording(r.path));
    const start = chosen ? castStart(chosen.path) : undefined;
    const timeline: TimelineEntry[] = timelineOf(events, deps.transferOf).map((t) => {
      if (start === undefined) return t;
      const off = Date.parse(t.ts) / 1000 - start;
      return off >= 0 ? { ...t, seek: off } : t;
    });
    const play = chosen ? { channel: chosen.channel, speed: num("speed", 1, 16), idle: num("idle", 2, 3600) } : undefined;
    const served = s.node === undefined ? undefined : { node: s.node, remote, segment, now: deps.now() };
    return c.html(sessionPage(viewer(c), s, timeline, views, play, served));
  };
  app.get("/sessions/:id", (c) => {
    const s = sessionOf(c);
    if (!s) return notFound(c);
    viewed(c, "session", s.id);
    return renderSession(c, s, undefined);
  });
  app.get("/sessions/:id/play", (c) => {
    const s = sessionOf(c);
    if (!s) return notFound(c);
    const channel = Number.parseInt(c.req.query("channel") ?? "", 10);
    const recs = deps.read.recordings(s.id, s.node);
    const ch = Number.isFinite(channel) ? channel : recs[0]?.channel;
    viewed(c, "playback", s.id, { channel: ch ?? null });
    return renderSession(c, s, ch);
  });
  app.get("/sessions/:id/json", (c) => {
    const s = sessionOf(c);
    if (!s) return c.text("no such session", 404);
    viewed(c, "json", s.id);
    c.header("Content-Disposition", `attachment; filename="session-${s.id}.json"`);
    return c.json({ session: s, events: deps.read.sessionEvents(s.id, s.node), recordings: deps.read.recordings(s.id, s.node) });
  });
  app.get("/sessions/:id/recordings/:file", async (c) => {
    const s = sessionOf(c);
    // `N.cast` for a terminal recording, `N.raw` for a raw output recording: the name must match the file's kind.
    const m = /^(\d{1,6})\.(cast|raw)$/.exec(c.req.param("file"));
    if (!s || !m) return c.text("no such recording", 404);
    const remote = remoteOf(s);
    const rec = deps.read.recordings(s.id, s.node).find((r) => r.channel === Number(m[1]));
    const raw = rec ? isRawRecording(rec.path) : false;
    if (!rec || (m[2] === "raw") !== raw) return c.text("no such recording", 404);
    if (remote) return c.text(`the recording file is on node ${printable(remote.node)}: download it there`, 404);
    let size: number;
    try {
      size = statSync(rec.path).size;
    } catch {
      return c.text("recording file missing", 404);
    }
    const check = await deps.read.checkRecording(s.id, rec.channel, rec.path);
    viewed(c, "recording", s.id, { channel: rec.channel, verified: check.ok });
    c.header("Content-Type", raw ? "application/octet-stream" : "application/x-asciicast");
    c.header("Content-Length", String(size));
    c.header("Content-Disposition", `attachment; filename="session-${s.id}-${rec.channel}.${raw ? "raw" : "cast"}"`);
    c.header("X-Varco-Recording-Check", check.ok ? "ok" : "failed");
    return c.body(Readable.toWeb(createReadStream(rec.path)) as ReadableStream);
  });

  app.get("/live", (c) => {
    const no = adminOnly(c);
    if (no) return no;
    const live = deps.live?.liveSessions() ?? [];
    const v = viewer(c);
    return c.html(
      page(
        "Live sessions",
        v,
        html`<h1>Live sessions</h1><p>${live.length} running.</p>
<table class="live"><thead><tr><th>Session</th><th>User</th><th>Account</th><th>Target</th><th>Source</th><th>Since</th><th>Up</th><th>Down</th><th>End it</th></tr></thead><tbody>
${live.map(
  (l) =>
    html`<tr><td><a href="/sessions/${encodeURIComponent(l.id)}">${l.id.slice(0, 8)}</a></td><td>${l.uid}</td><td>${l.account}</td><td>${l.target}</td><td>${l.source}</td><td>${shortTime(new Date(l.startedAt).toISOString())}</td><td>${l.upBytes}</td><td>${l.downBytes}</td>
<td><form method="post" action="/live/${encodeURIComponent(l.id)}/terminate" class="inline"><input type="hidden" name="csrf" value="${v.csrf}"><input name="reason" placeholder="reason shown to the user" maxlength="200" required><button type="submit">End session</button></form></td></tr>
`,
)}</tbody></table>`,
      ),
    );
  });
  app.post("/live/:id/terminate", async (c) => {
    const no = adminOnly(c);
    if (no) return no;
    const form = await c.req.parseBody();
    const reason = (typeof form.reason === "string" ? form.reason : "").trim().slice(0, 200) || "ended by an administrator";
    const id = c.req.param("id");
    const ok = SESSION_ID.test(id) && deps.live ? deps.live.terminate(id, c.get("web").uid, reason) : false;
    if (!ok) return c.html(page("Not found", viewer(c), html`<h1>No such live session</h1>`), 404);
    return c.redirect("/live", 303);
  });

  app.get("/lockouts", (c) => {
    const no = adminOnly(c);
    if (no) return no;
    const done = c.req.query("unlocked");
    return c.html(
      page(
        "Lockouts",
        viewer(c),
        html`<h1>Lift a lockout</h1>${done ? html`<p class="ok" id="unlocked">${done}: lockout lifted.</p>` : ""}
<form method="post" action="/lockouts/unlock" class="filters"><input type="hidden" name="csrf" value="${viewer(c).csrf}"><label>User <input name="uid" required maxlength="64"></label><button type="submit">Unlock</button></form>`,
      ),
    );
  });
  app.post("/lockouts/unlock", async (c) => {
    const no = adminOnly(c);
    if (no) return no;
    const form = await c.req.parseBody();
    const typed = (typeof form.uid === "string" ? form.uid : "").trim().slice(0, 64);
    if (!typed || !deps.unlock) return c.text("no uid", 400);
    const r = await deps.unlock(typed);
    deps.audit({
      type: "unlock",
      uid: r.uid,
      source: source(c),
      result: "ok",
      data: { failures_forgotten: r.forgotten, by: c.get("web").uid, via: "web" },
    });
    return c.redirect(`/lockouts?unlocked=${encodeURIComponent(r.uid)}`, 303);
  });
  return app;
}

/** The SHA-256 chained in the newest `recording` event of `channel` among a session's events (null: none). */
export function chainedRecordingHash(events: readonly AuditEvent[], channel: number): string | null {
  for (let i = events.length - 1; i >= 0; i--) {
    const e = events[i];
    if (e?.type !== "recording" || e.data?.channel !== channel) continue;
    return typeof e.data.sha256 === "string" ? e.data.sha256 : null;
  }
  return null;
}

/** The `timestamp` (s since the epoch) in the header line of an asciicast file, if readable (reads at most 64 KiB). */
export function castStart(path: string): number | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(path, "r");
    const buf = Buffer.alloc(64 * 1024);
    const n = readSync(fd, buf, 0, buf.length, 0);
    const line = buf.subarray(0, n).toString("utf8").split("\n")[0] ?? "";
    const t = (JSON.parse(line) as { timestamp?: unknown }).timestamp;
    return typeof t === "number" ? t : undefined;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
