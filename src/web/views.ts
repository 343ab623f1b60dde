/**
 * Server-rendered pages of the web console. Every value from the audit goes through `html`/`text`
 * (escape.ts); no page has inline script or style (the CSP forbids both): behaviour lives in
 * `/assets/console.js`, looks in `/assets/console.css`.
 */
import type { AuditEvent, AuditSession, RecordingRow } from "../audit/index.ts";
import { isRawRecording } from "../audit/raw.ts";
import { type Html, html } from "./escape.ts";
import type { WebRole } from "./sessions.ts";

/** The logged-in user as pages show it. */
export interface Viewer {
  readonly uid: string;
  readonly role: WebRole;
  readonly csrf: string;
}

/** A whole page: header with navigation and logout (when logged in), then `body`. */
export function page(title: string, viewer: Viewer | undefined, body: Html, o: { player?: boolean } = {}): string {
  const nav = viewer
    ? html`<nav><a href="/sessions">Sessions</a> <a href="/search">Search</a>${viewer.role === "admin" ? html` <a href="/live">Live</a> <a href="/lockouts">Lockouts</a>` : ""}
<span class="who">${viewer.uid} (${viewer.role})</span>
<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="${viewer.csrf}"><button type="submit">Log out</button></form></nav>`
    : "";
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · varco</title>
<link rel="stylesheet" href="/assets/console.css">
${o.player ? html`<link rel="stylesheet" href="/assets/asciinema-player.css"><script src="/assets/asciinema-player.min.js" defer></script>` : ""}
<script src="/assets/console.js" defer></script>
</head><body><header><strong>varco</strong> ${nav}</header><main>${body}</main></body></html>`.value;
}

/** The login form. `loginToken` is the double-submit token of the pre-login cookie. */
export function loginPage(loginToken: string, refused: boolean): string {
  return page(
    "Log in",
    undefined,
    html`<h1>Log in</h1>
${refused ? html`<p class="error" id="refused">Login refused.</p>` : ""}
<form method="post" action="/login" class="login">
<input type="hidden" name="login_token" value="${loginToken}">
<label>User <input name="uid" autocomplete="username" required maxlength="64"></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required maxlength="1024"></label>
<label>Verification code <input name="code" autocomplete="one-time-code" inputmode="numeric" required maxlength="64"></label>
<button type="submit">Log in</button>
</form>`,
  );
}

/** A short ISO time (seconds, UTC). */
export function shortTime(ts: string | null | undefined): string {
  return ts ? ts.replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
}

/** Session rows as a table; each id links to its page. `o.node`: a NODE column (a PostgreSQL state: several nodes). */
export function sessionTable(sessions: readonly AuditSession[], o: { node?: boolean } = {}): Html {
  return html`<table class="sessions"><thead><tr><th>Session</th>${o.node ? html`<th>Node</th>` : ""}<th>Started</th><th>Ended</th><th>User</th><th>Account</th><th>Target</th><th>Source</th><th>Result</th><th>Up</th><th>Down</th></tr></thead><tbody>
${sessions.map(
  (s) =>
    html`<tr><td><a href="/sessions/${encodeURIComponent(s.id)}">${s.id.slice(0, 8)}</a></td>${o.node ? html`<td class="node">${s.node ?? ""}</td>` : ""}<td>${shortTime(s.startedAt)}</td><td>${shortTime(s.endedAt)}</td><td>${s.uid}</td><td>${s.account}</td><td>${s.target ?? "-"}</td><td>${s.source}</td><td>${s.result}</td><td>${s.upBytes}</td><td>${s.downBytes}</td></tr>
`,
)}</tbody></table>`;
}

/** One row of a session's timeline. `seek` is the offset (s) into `channel`'s recording when there is one. */
export interface TimelineEntry {
  readonly ts: string;
  readonly kind: string;
  readonly what: string;
  readonly detail: string;
  readonly seek?: number | undefined;
}

/** A recording of the session and its hash check. */
export interface RecordingView {
  readonly row: RecordingRow;
  /** The node holding the file (another gateway): no player, no download, the chained hash only. */
  readonly remote?: string | undefined;
  readonly check: { ok: boolean; reason: string; expected: string | null; found: string | null };
}

/**
 * The session page: facts, recordings (verify status, downloads, player), timeline. A terminal
 * recording (asciicast) gets "Play" and "Download asciicast"; a raw output recording (`.raw`, a
 * channel without a terminal) only "Download output": it is bytes, not a screen, so no player.
 */
export function sessionPage(
  viewer: Viewer,
  s: AuditSession,
  timeline: readonly TimelineEntry[],
  recordings: readonly RecordingView[],
  play: { channel: number; speed: number; idle: number } | undefined,
  served?: { node: string; remote: NodeAge | undefined; segment: { ok: boolean; reason: string } | undefined; now: number },
): string {
  const id = encodeURIComponent(s.id);
  const speeds = [0.5, 1, 2, 4, 8];
  const idles = [0.5, 1, 2, 5, 30];
  return page(
    `Session ${s.id.slice(0, 8)}`,
    viewer,
    html`<h1>Session <code>${s.id}</code></h1>
${sessionTable([s], { node: served !== undefined })}
${served ? servedBy(served) : ""}
<p><a href="/sessions/${id}/json" download>Download JSON</a></p>
<h2>Recordings</h2>
${
  recordings.length === 0
    ? html`<p>No recording.</p>`
    : html`<table class="recordings"><thead><tr><th>Channel</th><th>Status</th><th>Bytes</th><th>Hash check</th><th></th></tr></thead><tbody>
${recordings.map((r) =>
  r.remote !== undefined
    ? html`<tr><td>${r.row.channel}</td><td>${r.row.status}</td><td>${r.row.bytes}</td><td class="${r.check.ok ? "ok" : "bad"} remote-recording">${r.check.ok ? "chained" : "FAILED"}: ${r.check.reason}; SHA-256 <code>${r.check.expected ?? "-"}</code></td>
<td>The file is on node <span class="node">${r.remote}</span>: ${isRawRecording(r.row.path) ? "download" : "play or download"} it there.</td></tr>`
    : html`<tr><td>${r.row.channel}</td><td>${r.row.status}</td><td>${r.row.bytes}</td><td class="${r.check.ok ? "ok" : "bad"}" title="expected ${r.check.expected ?? "-"}, found ${r.check.found ?? "-"}">${r.check.ok ? "verified" : "FAILED"}: ${r.check.reason}</td>
<td>${
        isRawRecording(r.row.path)
          ? html`<a href="/sessions/${id}/recordings/${r.row.channel}.raw" download>Download output</a>`
          : html`<a href="/sessions/${id}/play?channel=${r.row.channel}">Play</a> · <a href="/sessions/${id}/recordings/${r.row.channel}.cast" download>Download asciicast</a>`
      }</td></tr>
`,
)}</tbody></table>`
}
${
  play
    ? html`<h2>Playback (channel ${play.channel})</h2>
<form method="get" action="/sessions/${id}/play" class="inline"><input type="hidden" name="channel" value="${play.channel}">
<label>Speed <select name="speed">${speeds.map((v) => html`<option value="${v}"${v === play.speed ? html` selected` : ""}>${v}×</option>`)}</select></label>
<label>Idle time limit <select name="idle">${idles.map((v) => html`<option value="${v}"${v === play.idle ? html` selected` : ""}>${v} s</option>`)}</select></label>
<button type="submit">Apply</button></form>
<div id="player" data-src="/sessions/${id}/recordings/${play.channel}.cast" data-speed="${play.speed}" data-idle="${play.idle}"></div>`
    : ""
}
<h2>Timeline</h2>
<table class="timeline"><thead><tr><th>Time</th><th>Event</th><th>What</th><th>Detail</th></tr></thead><tbody>
${timeline.map(
  (t) =>
    html`<tr class="ev-${t.kind}"><td>${t.seek !== undefined && play ? html`<a href="#t=${t.seek.toFixed(1)}" class="seek">${shortTime(t.ts)}</a>` : shortTime(t.ts)}</td><td>${t.kind}</td><td class="what">${t.what}</td><td>${t.detail}</td></tr>
`,
)}</tbody></table>`,
    { player: play !== undefined },
  );
}

/** A node's data as the pages show its age. */
export interface NodeAge {
  readonly node: string;
  readonly local: boolean;
  readonly syncedAt: string | null;
  readonly error: string | null;
  readonly chainIssue: string | null;
}

/** "12 s", "5 min", "3 h", "2 d" for a duration in ms. */
export function ageText(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86_400)} d`;
}

/** One node's freshness: this node is live; another node's mirror says when it last caught up, and why not since. */
function ageOf(n: NodeAge, now: number): Html {
  if (n.local) return html`<span class="node">${n.node}</span> (this node, live)`;
  const when = n.syncedAt
    ? html`data as of ${shortTime(n.syncedAt)}, <span class="age">${ageText(now - Date.parse(n.syncedAt))}</span> old`
    : html`not mirrored yet`;
  return html`<span class="node">${n.node}</span> (${when}${n.error ? html`; <span class="bad">PostgreSQL unreachable, showing the last mirror</span>` : ""}${n.chainIssue ? html`; <span class="bad">chain broken: ${n.chainIssue}</span>` : ""})`;
}

/** The line naming every node read and the age of its data. */
export function nodeAges(nodes: readonly NodeAge[], now: number): Html {
  return html`<p class="nodes" id="nodes">Nodes: ${nodes.map((n, i) => html`${i > 0 ? "; " : ""}<span class="node-age">${ageOf(n, now)}</span>`)}.</p>`;
}

/** The node filter of the sessions list. */
export function nodeSelect(nodes: readonly NodeAge[], chosen: string | undefined): Html {
  return html`<label>Node <select name="node"><option value="">all</option>${nodes.map(
    (n) => html`<option value="${n.node}"${n.node === chosen ? html` selected` : ""}>${n.node}</option>`,
  )}</select></label>`;
}

/** Which node served a session, and for another node's, the age of the mirror and its chain check. */
function servedBy(o: {
  node: string;
  remote: NodeAge | undefined;
  segment: { ok: boolean; reason: string } | undefined;
  now: number;
}): Html {
  if (!o.remote) return html`<p class="served" id="served">Served by node <span class="node">${o.node}</span> (this node).</p>`;
  return html`<p class="served" id="served">Served by node <span class="node">${o.node}</span>: ${ageOf(o.remote, o.now)}; mirrored from PostgreSQL.</p>
<p class="verify ${o.segment?.ok ? "ok" : "bad"}" id="segment">Chain check of the mirrored segment: ${o.segment ? html`${o.segment.ok ? "verified" : "FAILED"}: ${o.segment.reason}` : "not available"}.</p>`;
}

/** The timeline of a session's events: login, channels, commands, transfers (direction, bytes), refusals, end. */
export function timelineOf(
  events: readonly AuditEvent[],
  transferOf: (
    d: Record<string, unknown> | undefined,
  ) => { direction: string; bytes: number; op: string; path: string; to_path: string | null; protocol: string } | undefined,
): TimelineEntry[] {
  const out: TimelineEntry[] = [];
  for (const e of events) {
    const d = e.data ?? {};
    const str = (v: unknown) => (v === undefined || v === null ? "" : typeof v === "string" ? v : JSON.stringify(v));
    switch (e.type) {
      case "session_start":
        out.push({
          ts: e.ts,
          kind: "login",
          what: `${e.uid ?? ""} as ${e.account ?? ""}`,
          detail: `from ${e.source ?? ""} to ${e.target ?? ""}`,
        });
        break;
      case "exec":
        out.push({ ts: e.ts, kind: "command", what: str(d.command), detail: d.pty ? "exec with pty" : "exec" });
        break;
      case "shell":
        out.push({ ts: e.ts, kind: "shell", what: "interactive shell", detail: str(d.term) });
        break;
      case "subsystem":
        out.push({ ts: e.ts, kind: "subsystem", what: str(d.name), detail: "" });
        break;
      case "file": {
        const t = transferOf(d);
        out.push({
          ts: e.ts,
          kind: "transfer",
          what: t ? `${t.path}${t.to_path ? ` -> ${t.to_path}` : ""}` : str(d.path),
          detail: t ? `${t.protocol} ${t.op} ${t.direction} ${t.bytes} bytes ${e.result ?? ""}` : str(d),
        });
        break;
      }
      case "forward":
        out.push({ ts: e.ts, kind: "forward", what: `${str(d.host)}:${str(d.port)}`, detail: "" });
        break;
      case "channel_refused":
      case "route_refused":
      case "upstream_refused":
      case "host_key_mismatch":
        out.push({
          ts: e.ts,
          kind: "refused",
          what: str(d.command ?? d.kind ?? e.type),
          detail: `${e.type} ${e.result ?? ""} ${str(d.reason ?? d.what ?? "")}`,
        });
        break;
      case "recording":
        out.push({ ts: e.ts, kind: "recording", what: `channel ${str(d.channel)}`, detail: `sha256 ${str(d.sha256)}` });
        break;
      case "session_end":
        out.push({
          ts: e.ts,
          kind: "end",
          what: e.result ?? "",
          detail: `up ${str(d.upBytes ?? d.up_bytes)} down ${str(d.downBytes ?? d.down_bytes)} exit ${str(d.exitStatus ?? d.exit_status)}`,
        });
        break;
      case "session_terminated" as AuditEvent["type"]:
        out.push({ ts: e.ts, kind: "terminated", what: `by ${str(d.by)}`, detail: str(d.reason) });
        break;
      default:
        break;
    }
  }
  return out;
}
