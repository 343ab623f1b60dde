/**
 * `varco audit verify`: an auditor's check of an audit database, read-only, reporting every
 * problem it finds (not only the first), each with what was expected and what was found.
 *
 * What it proves, and what it cannot:
 * - The hash chain (SHA-256 of each event's canonical encoding, see `canonicalEvent`) makes any
 *   edit, insertion or deletion inside the stored chain visible, and event ids must be consecutive.
 * - The chain starts at GENESIS (event 1) or at the newest prune checkpoint, which must be recorded
 *   by a chained `audit_pruned` event; only the sealing key (`checkSeals`) authenticates it.
 * - Session and recording rows are checked against their chained events in both directions, and
 *   recording files against the SHA-256 chained when they were closed, and against every running-hash
 *   checkpoint chained while they were open (`recording_checkpoint`: the SHA-256 of the file's first
 *   `bytes` bytes). An `interrupted` recording's closing hash was taken at the restart after a crash,
 *   so it vouches for nothing edited before that restart: only its checkpoints do (up to the newest one).
 * - Whoever can write the database can rewrite the chain consistently, or cut its newest events:
 *   only anchors (heads logged off the box, `parseAnchors`), seals and signatures catch that, and
 *   only up to the newest anchor. Events after it (the "unanchored tail") are reported as a warning.
 */
import type { KeyObject } from "node:crypto";
import { createHash, verify as verifySignature } from "node:crypto";
import { closeSync, existsSync, openSync, readSync, statSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { canonicalParts, checkpointMessage, type EventRow, hashFile, type SessionRow } from "./store.ts";

/** One problem found by `verifyAuditDb`. `id` names the row (event id, session id, …) so an auditor can find it. */
export interface VerifyIssue {
  kind: "event" | "session" | "recording" | "checkpoint" | "seal" | "anchor" | "file";
  id: string;
  expected?: string;
  found?: string;
  reason: string;
}

/**
 * A chain head the gateway logged off the box: the `anchor` field of a pino JSON line whose `msg`
 * is `"audit anchor"`. `hash` is the event's chain hash (hex), `seal` the HMAC of the epoch key (hex).
 */
export interface Anchor {
  readonly node: string;
  readonly event_id: number;
  readonly hash: string;
  readonly epoch: number;
  readonly seal: string;
}

export interface VerifyOptions {
  /** The sealing verification key K0 (32 bytes) printed once by `varco audit keygen`. */
  sealKey?: Buffer | undefined;
  /** Heads logged off the box (see `parseAnchors`). Given (even empty): the anchors are checked and the tail measured. */
  anchors?: readonly Anchor[] | undefined;
  /** Checks the `seals` table with K0 (src/audit/seal.ts); called only with `sealKey` and when the table exists. */
  checkSeals?: ((db: Database.Database, k0: Buffer) => VerifyIssue[]) | undefined;
  /** ed25519 public key of the (older) signed checkpoints in the `signatures` table. */
  publicKey?: KeyObject | undefined;
  /** This database's node name (`gateway.node`): anchors of other nodes are ignored. Default: from the seals, else the anchors. */
  node?: string | undefined;
  /**
   * false: the recording files are on another node (a trail pulled from the shared PostgreSQL
   * state): rows and chained events are checked, the files are not (default true).
   */
  recordingFiles?: boolean | undefined;
}

export interface VerifyResult {
  ok: boolean;
  /** Rows checked: events in the chain, session rows, recording rows. */
  events: number;
  sessions: number;
  recordings: number;
  issues: VerifyIssue[];
  warnings: string[];
}

const GENESIS = "0".repeat(64);
const HEX64 = /^[0-9a-f]{64}$/;
/** Rows written by the gateway carry the time of their event within milliseconds; more than this is a back-dated row. */
const TIME_SLACK_MS = 1000;

/**
 * Reads anchor lines out of a log (a file written by `journalctl -u varco -o cat`, or the gateway's
 * stdout). A line counts if it holds a JSON object (from its first `{`, so a syslog prefix is
 * tolerated) whose `msg` is `"audit anchor"`; every other line is ignored. Anchor lines whose
 * `anchor` field does not have the agreed shape are counted in `malformed`.
 */
export function parseAnchors(text: string): { anchors: Anchor[]; malformed: number } {
  const anchors: Anchor[] = [];
  let malformed = 0;
  for (const line of text.split("\n")) {
    if (!line.includes("audit anchor")) continue;
    const start = line.indexOf("{");
    if (start < 0) continue;
    let obj: unknown;
    try {
      obj = JSON.parse(line.slice(start));
    } catch {
      continue;
    }
    if (typeof obj !== "object" || obj === null || (obj as { msg?: unknown }).msg !== "audit anchor") continue;
    const a = (obj as { anchor?: unknown }).anchor as Record<string, unknown> | undefined;
    if (
      typeof a === "object" &&
      a !== null &&
      typeof a.node === "string" &&
      a.node !== "" &&
      Number.isSafeInteger(a.event_id) &&
      (a.event_id as number) > 0 &&
      typeof a.hash === "string" &&
      HEX64.test(a.hash) &&
      Number.isSafeInteger(a.epoch) &&
      (a.epoch as number) >= 0 &&
      typeof a.seal === "string" &&
      /^[0-9a-f]*$/.test(a.seal)
    ) {
      anchors.push({ node: a.node, event_id: a.event_id as number, hash: a.hash, epoch: a.epoch as number, seal: a.seal });
    } else malformed += 1;
  }
  return { anchors, malformed };
}

interface RecordingDbRow {
  session_id: string;
  channel: number;
  path: string;
  sha256: string | null;
  bytes: number;
  status: string;
}

interface CheckpointRow {
  id: number;
  ts: string;
  pruned_through_id: number;
  last_hash: string;
}

/** The part of a chained event the row checks need. */
interface Chained {
  id: number;
  ts: string;
  uid: string | null;
  account: string | null;
  target: string | null;
  source: string | null;
  result: string | null;
  data: Record<string, unknown>;
}

const str = (v: unknown): string => (v === null || v === undefined ? "null" : typeof v === "string" ? v : JSON.stringify(v));
const far = (a: string | null, b: string | null): boolean => {
  if (a === null || b === null) return a !== b;
  const d = Date.parse(a) - Date.parse(b);
  return !(Math.abs(d) <= TIME_SLACK_MS);
};

/**
 * Verifies the audit database at `file` without writing to it (opened read-only, never created).
 * Returns every problem found; `ok` is true when there is none. Warnings say what could not be
 * checked (no key for existing signatures or seals, an unauthenticated prune checkpoint, the
 * unanchored tail). Never throws for a missing or unreadable database: that is a `file` issue.
 */
export function verifyAuditDb(file: string, o: VerifyOptions = {}): VerifyResult {
  const issues: VerifyIssue[] = [];
  const warnings: string[] = [];
  const result = (events = 0, sessions = 0, recordings = 0): VerifyResult => ({
    ok: issues.length === 0,
    events,
    sessions,
    recordings,
    issues,
    warnings,
  });
  const dir = dirname(file);
  if (!existsSync(dir)) {
    issues.push({ kind: "file", id: dir, expected: "the state folder", found: "nothing", reason: "the state folder does not exist" });
    return result();
  }
  if (!existsSync(file) || !statSync(file).isFile()) {
    issues.push({ kind: "file", id: file, expected: "the audit database", found: "nothing", reason: "the audit database does not exist" });
    return result();
  }
  let db: Database.Database;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
  } catch (err) {
    issues.push({ kind: "file", id: file, reason: `cannot open the audit database: ${(err as Error).message}` });
    return result();
  }
  try {
    return verifyOpen(db, o, issues, warnings);
  } catch (err) {
    issues.push({ kind: "file", id: file, reason: `cannot read the audit database: ${(err as Error).message}` });
    return result();
  } finally {
    db.close();
  }
}

function verifyOpen(db: Database.Database, o: VerifyOptions, issues: VerifyIssue[], warnings: string[]): VerifyResult {
  const tables = new Set(
    (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as Array<{ name: string }>).map((r) => r.name),
  );
  for (const t of ["events", "sessions", "recordings", "checkpoints"]) {
    if (!tables.has(t)) issues.push({ kind: "file", id: t, expected: `table ${t}`, found: "nothing", reason: "a table is missing" });
  }
  if (!tables.has("events")) return { ok: false, events: 0, sessions: 0, recordings: 0, issues, warnings };
  const checkpoints = tables.has("checkpoints")
    ? (db.prepare("SELECT * FROM checkpoints ORDER BY pruned_through_id, id").all() as CheckpointRow[])
    : [];

  // 1. The chain.
  let prev: EventRow | undefined;
  let first: EventRow | undefined;
  let count = 0;
  const starts = new Map<string, Chained>();
  const ends = new Map<string, Chained>();
  const sessionsWithEvents = new Set<string>();
  const recordingEvents = new Map<string, Chained[]>();
  const recordingCheckpoints = new Map<string, Chained[]>();
  const prunedThrough = new Set<number>();
  for (const row of db.prepare("SELECT * FROM events ORDER BY id").iterate() as IterableIterator<EventRow>) {
    const id = String(row.id);
    if (!prev) {
      first = row;
      if (row.prev_hash === GENESIS) {
        if (row.id !== 1)
          issues.push({
            kind: "event",
            id,
            expected: "event 1",
            found: `event ${row.id}`,
            reason: "the chain restarts at GENESIS after its first events were deleted",
          });
      } else if (!checkpoints.some((c) => c.last_hash === row.prev_hash && c.pruned_through_id === row.id - 1)) {
        issues.push({
          kind: "event",
          id,
          expected: `prev_hash GENESIS, or a prune checkpoint through event ${row.id - 1} with this hash`,
          found: row.prev_hash,
          reason: "the first event neither starts the chain nor follows a prune checkpoint (events deleted from the start?)",
        });
      }
    } else {
      if (row.id !== prev.id + 1)
        issues.push({
          kind: "event",
          id,
          expected: `event ${prev.id + 1}`,
          found: `event ${row.id}`,
          reason: `event ids jump: ${row.id - prev.id - 1} events missing after event ${prev.id} (rows deleted)`,
        });
      if (row.prev_hash !== prev.hash)
        issues.push({
          kind: "event",
          id,
          expected: prev.hash,
          found: row.prev_hash,
          reason: "prev_hash does not match the previous event's hash (a row was deleted, inserted or rewritten)",
        });
    }
    const recomputed = createHash("sha256")
      .update(
        canonicalParts(
          row.id,
          row.ts,
          {
            type: row.type as never,
            sessionId: row.session_id ?? undefined,
            uid: row.uid ?? undefined,
            account: row.account ?? undefined,
            target: row.target ?? undefined,
            source: row.source ?? undefined,
            result: row.result ?? undefined,
          },
          row.data,
          row.prev_hash,
        ),
      )
      .digest("hex");
    if (recomputed !== row.hash)
      issues.push({
        kind: "event",
        id,
        expected: row.hash,
        found: recomputed,
        reason: "the event's content does not match its hash (the row was edited)",
      });
    let data: Record<string, unknown> = {};
    try {
      const parsed = JSON.parse(row.data) as unknown;
      if (typeof parsed === "object" && parsed !== null) data = parsed as Record<string, unknown>;
    } catch {
      issues.push({ kind: "event", id, found: row.data.slice(0, 80), reason: "the event's data is not JSON (the row was edited)" });
    }
    const e: Chained = {
      id: row.id,
      ts: row.ts,
      uid: row.uid,
      account: row.account,
      target: row.target,
      source: row.source,
      result: row.result,
      data,
    };
    const sid = row.session_id;
    if (sid !== null) {
      sessionsWithEvents.add(sid);
      if (row.type === "session_start") starts.set(sid, e);
      if (row.type === "session_end") ends.set(sid, e);
      if (row.type === "recording") {
        const key = `${sid}/${str(data.channel)}`;
        recordingEvents.set(key, [...(recordingEvents.get(key) ?? []), e]);
      }
      if (row.type === "recording_checkpoint") {
        const key = `${sid}/${str(data.channel)}`;
        const list = recordingCheckpoints.get(key);
        if (list) list.push(e);
        else recordingCheckpoints.set(key, [e]);
      }
    }
    if (row.type === "audit_pruned" && Number.isSafeInteger(data.pruned_through_id)) prunedThrough.add(data.pruned_through_id as number);
    prev = row;
    count += 1;
  }
  const last = prev;

  // 2. Prune checkpoints: the one the chain starts at must be recorded by a chained audit_pruned event.
  const startCp = first ? checkpoints.find((c) => c.last_hash === first?.prev_hash && c.pruned_through_id === first.id - 1) : undefined;
  for (const c of checkpoints) {
    if (first && c.pruned_through_id >= first.id)
      issues.push({
        kind: "checkpoint",
        id: String(c.id),
        expected: `events through ${c.pruned_through_id} pruned`,
        found: `event ${first.id} still in the chain`,
        reason: "the checkpoint claims a prune that did not happen",
      });
  }
  if (!first && checkpoints.length > 0)
    issues.push({
      kind: "checkpoint",
      id: String(checkpoints[checkpoints.length - 1]?.id),
      expected: "the audit_pruned event chained after the prune",
      found: "no events",
      reason: "the chain is empty after a prune (events deleted)",
    });
  if (startCp) {
    if (!prunedThrough.has(startCp.pruned_through_id))
      issues.push({
        kind: "checkpoint",
        id: String(startCp.id),
        expected: `an audit_pruned event with pruned_through_id ${startCp.pruned_through_id}`,
        found: "none in the chain",
        reason: "no chained audit_pruned event records the prune the chain starts at (checkpoint forged, old events deleted)",
      });
    if (!o.sealKey)
      warnings.push(
        `the chain starts at prune checkpoint ${startCp.id} (events through ${startCp.pruned_through_id} pruned at ${startCp.ts}); without the seal key it cannot be authenticated`,
      );
  }

  // 3. Session rows ↔ session_start / session_end events.
  let sessionCount = 0;
  const sessionIds = new Set<string>();
  const prunedStarts = new Set<string>();
  for (const s of db.prepare("SELECT * FROM sessions ORDER BY started_at, id").iterate() as IterableIterator<SessionRow>) {
    sessionCount += 1;
    sessionIds.add(s.id);
    // store.prune() keeps the row of an ended session whose end is newer than the cutoff while pruning its start.
    const startPruned =
      !starts.has(s.id) && startCp !== undefined && first !== undefined && s.started_at < first.ts && sessionsWithEvents.has(s.id);
    if (startPruned) prunedStarts.add(s.id);
    checkSessionRow(s, starts.get(s.id), ends.get(s.id), issues, { startPruned });
  }
  for (const [sid, e] of starts)
    if (!sessionIds.has(sid))
      issues.push({
        kind: "session",
        id: sid,
        expected: `the session row of session_start event ${e.id}`,
        found: "no row",
        reason: "a chained session has no session row (row deleted)",
      });
  for (const [sid, e] of ends)
    if (!sessionIds.has(sid) && !starts.has(sid))
      issues.push({
        kind: "session",
        id: sid,
        expected: `the session row of session_end event ${e.id}`,
        found: "no row",
        reason: "a chained session has no session row (row deleted)",
      });

  // 4. Recording rows ↔ recording events ↔ files.
  let recordingCount = 0;
  const rowKeys = new Set<string>();
  for (const r of db.prepare("SELECT * FROM recordings ORDER BY session_id, channel").iterate() as IterableIterator<RecordingDbRow>) {
    recordingCount += 1;
    const key = `${r.session_id}/${r.channel}`;
    rowKeys.add(key);
    const evs = recordingEvents.get(key) ?? [];
    if (evs.length === 0 && r.status !== "open" && prunedStarts.has(r.session_id)) {
      warnings.push(`recording ${r.session_id}-${r.channel} (${r.path}): its recording event was pruned, its file cannot be checked`);
      continue;
    }
    checkRecordingRow(r, evs, ends.get(r.session_id), issues, warnings, o.recordingFiles !== false);
    if (o.recordingFiles !== false) checkRecordingCheckpoints(r, recordingCheckpoints.get(key) ?? [], issues);
  }
  for (const [key, evs] of recordingEvents) {
    if (rowKeys.has(key)) continue;
    const e = evs[evs.length - 1] as Chained;
    const path = typeof e.data.path === "string" ? e.data.path : "";
    const id = `${key.replace("/", "-")} (${path})`;
    issues.push({
      kind: "recording",
      id,
      expected: `the recording row of recording event ${e.id}`,
      found: "no row",
      reason: "a chained recording has no recording row (row deleted)",
    });
    checkRecordingFile(path, e.data.sha256, id, "the recording file's SHA-256 does not match the chained one", issues);
  }

  // 5. ed25519 signed checkpoints (older scheme), seals (forward-secure), anchors.
  const sigCount = tables.has("signatures") ? (db.prepare("SELECT COUNT(*) AS n FROM signatures").get() as { n: number }).n : 0;
  if (o.publicKey) issues.push(...checkSignatures(db, o.publicKey, sigCount, first?.id ?? 0));
  else if (sigCount > 0) warnings.push(`${sigCount} ed25519 checkpoint signatures were not checked (no --pubkey)`);

  const sealCount = tables.has("seals") ? (db.prepare("SELECT COUNT(*) AS n FROM seals").get() as { n: number }).n : 0;
  if (o.sealKey) {
    if (!tables.has("seals"))
      issues.push({
        kind: "seal",
        id: "-",
        expected: "a seals table",
        found: "nothing",
        reason: "no seals in the database (is sealing on?)",
      });
    else if (o.checkSeals) issues.push(...o.checkSeals(db, o.sealKey));
    else warnings.push("a seal key was given but this build cannot check seals");
  } else if (sealCount > 0) warnings.push(`${sealCount} seals were not checked (no seal key)`);

  const nodes = tables.has("seals")
    ? (db.prepare("SELECT DISTINCT node FROM seals").all() as Array<{ node: string }>).map((r) => r.node)
    : [];
  const tail = checkAnchors(db, o, { first, last, checkpoints, nodes, count }, issues, warnings);
  if (tail) warnings.push(tail);

  return { ok: issues.length === 0, events: count, sessions: sessionCount, recordings: recordingCount, issues, warnings };
}

function checkSessionRow(
  s: SessionRow,
  start: Chained | undefined,
  end: Chained | undefined,
  issues: VerifyIssue[],
  o: { startPruned: boolean },
): void {
  const id = s.id;
  const differ = (event: string, field: string, expected: unknown, found: unknown) => {
    issues.push({
      kind: "session",
      id,
      expected: str(expected),
      found: str(found),
      reason: `the session row differs from its chained ${event} event (${field})`,
    });
  };
  if (start) {
    if (start.uid !== s.uid) differ("session_start", "uid", start.uid, s.uid);
    if (start.account !== s.account) differ("session_start", "account", start.account, s.account);
    if ((start.target ?? null) !== s.target) differ("session_start", "target", start.target, s.target);
    if (start.source !== s.source) differ("session_start", "source", start.source, s.source);
    if (far(start.ts, s.started_at)) differ("session_start", "started_at", start.ts, s.started_at);
  } else if (!o.startPruned) {
    issues.push({
      kind: "session",
      id,
      expected: "a chained session_start event",
      found: "none",
      reason: "no session_start event in the chain for this session row (row inserted?)",
    });
  }
  if (end) {
    if (s.ended_at === null) {
      issues.push({
        kind: "session",
        id,
        expected: `ended at ${end.ts} (session_end event ${end.id})`,
        found: "open",
        reason: "the session ended but its row says open (row reset)",
      });
      return;
    }
    if (far(end.ts, s.ended_at)) differ("session_end", "ended_at", end.ts, s.ended_at);
    if (end.result !== s.result) differ("session_end", "result", end.result, s.result);
    if (end.data.up_bytes !== s.up_bytes) differ("session_end", "up_bytes", end.data.up_bytes, s.up_bytes);
    if (end.data.down_bytes !== s.down_bytes) differ("session_end", "down_bytes", end.data.down_bytes, s.down_bytes);
    if ((end.data.exit_status ?? null) !== s.exit_status) differ("session_end", "exit_status", end.data.exit_status, s.exit_status);
  } else if (s.ended_at !== null || s.result !== "open") {
    issues.push({
      kind: "session",
      id,
      expected: "open (no session_end event in the chain)",
      found: `${s.result}, ended at ${str(s.ended_at)}`,
      reason: "the session row says ended but no session_end event is chained",
    });
  }
}

function checkRecordingRow(
  r: RecordingDbRow,
  events: readonly Chained[],
  sessionEnd: Chained | undefined,
  issues: VerifyIssue[],
  warnings: string[],
  files: boolean,
): void {
  const id = `${r.session_id}-${r.channel} (${r.path})`;
  const e = events[0];
  if (events.length > 1) {
    issues.push({
      kind: "recording",
      id,
      expected: `one recording event (event ${e?.id}, SHA-256 ${str(e?.data.sha256)})`,
      found: `${events.length} (events ${events.map((x) => x.id).join(", ")})`,
      reason: "the recording was closed more than once (its row was set back to open)",
    });
  }
  if (r.status === "open") {
    if (e)
      issues.push({
        kind: "recording",
        id,
        expected: `${str(e.result)} (recording event ${e.id})`,
        found: "open",
        reason: "the recording row says open but a chained recording event closed it (row reset)",
      });
    else if (sessionEnd)
      warnings.push(
        `recording ${id} is still open although its session ended (event ${sessionEnd.id}); its file has no chained SHA-256 until the gateway closes it`,
      );
    return;
  }
  if (!e) {
    issues.push({
      kind: "recording",
      id,
      expected: "a chained recording event",
      found: `a ${r.status} row`,
      reason: "the recording row differs from its chained recording event (none chained: row inserted?)",
    });
    return;
  }
  const fields: Array<[string, unknown, unknown]> = [
    ["sha256", e.data.sha256, r.sha256],
    ["status", e.result, r.status],
    ["path", e.data.path, r.path],
    ["bytes", e.data.bytes, r.bytes],
  ];
  for (const [field, expected, found] of fields)
    if (expected !== found)
      issues.push({
        kind: "recording",
        id,
        expected: str(expected),
        found: str(found),
        reason: `the recording row differs from its chained recording event (${field})`,
      });
  if (files)
    checkRecordingFile(r.path, e.data.sha256, id, "the recording file's SHA-256 does not match the one stored when it was closed", issues);
}

/**
 * Every chained running-hash checkpoint of recording `r` must be a prefix of its file: the SHA-256 of
 * the file's first `data.bytes` bytes equals `data.sha256`. One issue per recording (the first
 * checkpoint that fails, and how many do). A missing file is reported by `checkRecordingRow`.
 * For an `interrupted` recording this is the only check that covers edits made between the crash
 * and the restart that hashed the file (the restart's hash is of the edited file).
 */
/** The file at `path` must exist and hash to the chained `sha256`; `mismatch` is the reason given when it does not. */
function checkRecordingFile(path: string, sha256: unknown, id: string, mismatch: string, issues: VerifyIssue[]): void {
  const f = path ? hashFile(path) : { sha256: "", bytes: -1 };
  if (f.bytes < 0)
    issues.push({
      kind: "recording",
      id,
      expected: `a file with SHA-256 ${str(sha256)}`,
      found: "no file",
      reason: "the recording file is missing",
    });
  else if (f.sha256 !== sha256) issues.push({ kind: "recording", id, expected: str(sha256), found: f.sha256, reason: mismatch });
}

function checkRecordingCheckpoints(r: RecordingDbRow, checkpoints: readonly Chained[], issues: VerifyIssue[]): void {
  if (checkpoints.length === 0) return;
  const id = `${r.session_id}-${r.channel} (${r.path})`;
  const valid: Array<{ e: Chained; bytes: number; sha256: string }> = [];
  for (const e of checkpoints) {
    const bytes = e.data.bytes;
    const sha256 = e.data.sha256;
    if (typeof bytes === "number" && Number.isSafeInteger(bytes) && bytes >= 0 && typeof sha256 === "string")
      valid.push({ e, bytes, sha256 });
    else
      issues.push({
        kind: "recording",
        id,
        expected: "a checkpoint with integer bytes and a SHA-256",
        found: `event ${e.id}: ${JSON.stringify(e.data).slice(0, 120)}`,
        reason: "a chained recording checkpoint is malformed",
      });
  }
  if (valid.length === 0) return;
  const prefixes = hashPrefixes(
    r.path,
    valid.map((c) => c.bytes),
  );
  if (!prefixes) return;
  const bad = valid.filter((c) => prefixes.get(c.bytes) !== c.sha256);
  if (bad.length === 0) return;
  const newest = valid[valid.length - 1] as (typeof valid)[number];
  const first = bad.reduce((a, b) => (b.bytes < a.bytes ? b : a));
  const found = prefixes.get(first.bytes);
  issues.push({
    kind: "recording",
    id,
    expected: `the file's first ${first.bytes} bytes with SHA-256 ${first.sha256} (checkpoint event ${first.e.id})`,
    found: found === undefined ? `a file of ${prefixes.get(-1) ?? "?"} bytes` : found,
    reason:
      r.status === "interrupted" && bad.includes(newest)
        ? `the interrupted recording's file does not start with the prefix chained by its newest checkpoint (event ${newest.e.id}): edited or cut before the restart hashed it (${bad.length} of ${valid.length} checkpoints differ)`
        : `the recording file is not an extension of its chained running-hash checkpoints (${bad.length} of ${valid.length} differ: edited or cut)`,
  });
}

/**
 * SHA-256 (hex) of the first `n` bytes of `path` for each `n` of `offsets`, in one pass; the key -1
 * holds the file's size. An offset past the end of the file has no entry. Undefined if the file
 * cannot be read.
 */
function hashPrefixes(path: string, offsets: readonly number[]): Map<number, string> | undefined {
  const want = [...new Set(offsets)].sort((a, b) => a - b);
  const out = new Map<number, string>();
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return undefined;
  }
  try {
    const hash = createHash("sha256");
    const buf = Buffer.alloc(1024 * 1024);
    let pos = 0;
    let i = 0;
    while (i < want.length && want[i] === 0) out.set(want[i++] as number, hash.copy().digest("hex"));
    while (i < want.length) {
      const next = want[i] as number;
      const n = readSync(fd, buf, 0, Math.min(buf.length, next - pos), pos);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
      pos += n;
      if (pos === next) out.set(want[i++] as number, hash.copy().digest("hex"));
    }
    out.set(-1, String(statSync(path).size));
    return out;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** Every signature must verify and name an event that still has that hash (unless pruned); at least one must exist. */
function checkSignatures(db: Database.Database, publicKey: KeyObject, count: number, firstId: number): VerifyIssue[] {
  if (count === 0)
    return [
      {
        kind: "checkpoint",
        id: "-",
        expected: "signed checkpoints",
        found: "none",
        reason: "no signed checkpoint in the database (is audit_signing_key set?)",
      },
    ];
  const out: VerifyIssue[] = [];
  const eventHash = db.prepare<[number], { hash: string }>("SELECT hash FROM events WHERE id = ?");
  for (const s of db.prepare("SELECT event_id, hash, signature FROM signatures ORDER BY event_id").iterate() as IterableIterator<{
    event_id: number;
    hash: string;
    signature: string;
  }>) {
    const id = String(s.event_id);
    let good = false;
    try {
      good = verifySignature(null, Buffer.from(checkpointMessage(s.event_id, s.hash)), publicKey, Buffer.from(s.signature, "base64"));
    } catch {
      good = false;
    }
    if (!good) {
      out.push({ kind: "checkpoint", id, reason: "the signature does not verify with this public key (checkpoint forged or re-signed)" });
      continue;
    }
    if (s.event_id < firstId) continue; // pruned
    const ev = eventHash.get(s.event_id);
    if (!ev)
      out.push({
        kind: "checkpoint",
        id,
        expected: s.hash,
        found: "no event",
        reason: "the signed event is missing (the chain was truncated)",
      });
    else if (ev.hash !== s.hash)
      out.push({
        kind: "checkpoint",
        id,
        expected: s.hash,
        found: ev.hash,
        reason: "the signed event's hash changed (the chain was rewritten)",
      });
  }
  return out;
}

/**
 * Each anchor of this node must still be in the chain with its hash (or be covered by a prune
 * checkpoint). Returns the warning about the unanchored tail, if any.
 */
function checkAnchors(
  db: Database.Database,
  o: VerifyOptions,
  c: { first: EventRow | undefined; last: EventRow | undefined; checkpoints: CheckpointRow[]; nodes: string[]; count: number },
  issues: VerifyIssue[],
  warnings: string[],
): string | undefined {
  const tailSince = (afterId: number): string | undefined => {
    const n = (db.prepare("SELECT COUNT(*) AS n FROM events WHERE id > ?").get(afterId) as { n: number }).n;
    if (n === 0) return undefined;
    const since = (db.prepare("SELECT ts FROM events WHERE id > ? ORDER BY id LIMIT 1").get(afterId) as { ts: string }).ts;
    return afterId === 0
      ? `no anchor covers this chain: all ${n} events (since ${since}) could be cut or rewritten without trace (give --anchor)`
      : `unanchored tail: ${n} events after the newest anchor (event ${afterId}), since ${since}, are protected by the chain only (deleting or rewriting them is not detectable)`;
  };
  if (!o.anchors) return tailSince(0);
  const all = o.anchors;
  const anchorNodes = [...new Set(all.map((a) => a.node))];
  let node = o.node;
  if (node === undefined && c.nodes.length === 1) node = c.nodes[0];
  if (node === undefined && anchorNodes.length === 1) node = anchorNodes[0];
  if (node === undefined && anchorNodes.length > 1) {
    issues.push({
      kind: "anchor",
      id: "-",
      expected: "anchors of one node",
      found: anchorNodes.join(", "),
      reason: "the anchors name several nodes and the database does not say which node it belongs to",
    });
    return tailSince(0);
  }
  const mine = all.filter((a) => a.node === node);
  if (all.length > mine.length) warnings.push(`${all.length - mine.length} anchors of other nodes were ignored`);
  if (mine.length === 0) {
    warnings.push(`anchors were given but none is for this database${node ? ` (node ${node})` : ""}`);
    return tailSince(0);
  }
  const firstId = c.first?.id ?? Number.POSITIVE_INFINITY;
  const lastId = c.last?.id ?? 0;
  const eventHash = db.prepare<[number], { hash: string }>("SELECT hash FROM events WHERE id = ?");
  const seen = new Set<string>();
  let newest = 0;
  for (const a of mine) {
    const key = `${a.event_id}:${a.hash}`;
    if (seen.has(key)) continue;
    seen.add(key);
    newest = Math.max(newest, a.event_id);
    const id = `${a.node}:${a.event_id}`;
    if (a.event_id < firstId && c.first) {
      const cover = c.checkpoints.find((k) => k.pruned_through_id >= a.event_id);
      if (!cover)
        issues.push({
          kind: "anchor",
          id,
          expected: `event ${a.event_id} with hash ${a.hash}`,
          found: `the chain starts at event ${firstId}`,
          reason: "the anchored event is gone and no prune checkpoint covers it (events deleted from the start)",
        });
      else {
        const exact = c.checkpoints.find((k) => k.pruned_through_id === a.event_id);
        if (exact && exact.last_hash !== a.hash)
          issues.push({
            kind: "anchor",
            id,
            expected: a.hash,
            found: exact.last_hash,
            reason: `prune checkpoint ${exact.id} records another hash for the anchored event (the chain was rewritten before the prune)`,
          });
      }
      continue;
    }
    if (a.event_id > lastId) {
      issues.push({
        kind: "anchor",
        id,
        expected: `event ${a.event_id} with hash ${a.hash}`,
        found: c.last ? `the chain ends at event ${lastId}` : "no events",
        reason: "the anchored event is missing: the chain was truncated",
      });
      continue;
    }
    const ev = eventHash.get(a.event_id);
    if (!ev)
      issues.push({ kind: "anchor", id, expected: a.hash, found: "no event", reason: "the anchored event is missing (rows deleted)" });
    else if (ev.hash !== a.hash)
      issues.push({
        kind: "anchor",
        id,
        expected: a.hash,
        found: ev.hash,
        reason: "the anchored event's hash changed: the chain was rewritten",
      });
  }
  return tailSince(newest);
}
