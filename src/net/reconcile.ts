/**
 * Reconciling the host with the rendered network state: plan, atomic apply with an undo list,
 * confirm-or-revert, rollback to the previous generation, and drift status.
 * Every host command goes through the CommandRunner (argv arrays, optional namespace).
 *
 * Generations live in `<state_dir>/net/`: `gen-N.json` (what was applied, a structural snapshot of
 * the table right after, the link undo list, the previous keepalived.conf), `pending.json` (a
 * confirm deadline) and `lock` (one apply, rollback, confirm or revert at a time).
 */
import { createHash, randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { createTwoFilesPatch } from "diff";
import ipaddr from "ipaddr.js";
import lockfile from "proper-lockfile";
import writeFileAtomic from "write-file-atomic";
import type { NetworkPolicy } from "../policy/index.ts";
import { liveRefusals } from "./guard.ts";
import type { GatewayServices } from "./input.ts";
import { type KeepalivedInputs, redactKeepalived, renderKeepalived } from "./keepalived.ts";
import { type LinkCheck, type LinkOp, linkCheckHolds, ownedLinks, removedLinkOps, renderLinkOps, withLiveUndo } from "./links.ts";
import { type LiveLink, liveLinks } from "./live.ts";
import { renderNft, renderNftDelete } from "./nft.ts";
import type { CommandRunner } from "./runner.ts";
import { untrustedStateProblem } from "./trust.ts";

/** Thrown when an apply failed; the host was restored to its state before the apply. */
export class ApplyError extends Error {
  readonly step: string;
  /** `changed`: false when the apply stopped before touching the host. */
  constructor(step: string, cause: unknown, changed = true) {
    super(
      `net apply failed at ${step}: ${(cause as Error).message}. ${changed ? "The previous state was restored." : "Nothing was changed."}`,
      { cause },
    );
    this.name = "ApplyError";
    this.step = step;
  }
}

/** The desired state, rendered. */
export interface Desired {
  /** The network policy this was rendered from (paths resolved), for checks against the live host. */
  readonly network: NetworkPolicy;
  readonly table: string;
  readonly nft: string;
  readonly links: readonly LinkOp[];
  /** Rendered keepalived.conf, or undefined when there are no VIPs. */
  readonly keepalived: string | undefined;
  readonly keepalivedFile: string;
  /** The operator's keepalived.conf that includes `keepalivedFile` (never written by varco; config-tested after the write). */
  readonly keepalivedMainFile: string;
  readonly keepalivedPidFile: string;
}

/**
 * What a generation expects the table to hold, structurally (from `nft -j list table`, nft(8) JSON,
 * libnftables-json(5)): `skeleton` is every object but set/map elements, normalised (handles dropped,
 * counters zeroed), in listing order; `elements` holds, per `set NAME` / `map NAME`, either the
 * element list, `"rendered"` (exactly the elements written in `desired.nft`, so they are not stored
 * twice), or `"dynamic"` (a set the packet path fills, whose elements are not compared).
 */
export interface TableSnapshot {
  readonly skeleton: readonly string[];
  readonly elements: Readonly<Record<string, readonly string[] | "rendered" | "dynamic">>;
}

export interface Generation {
  readonly id: number;
  readonly appliedAt: string;
  readonly desired: { table: string; nft: string; keepalived: string | undefined };
  /** `nft -t list table` right after the apply, normalised (counters zeroed): shown as a diff when rules drift. */
  readonly listing: string;
  /** The table right after the apply, structurally (absent in generations written before it existed). */
  readonly snapshot?: TableSnapshot;
  /** Undo operations of the links this generation created, in the order to run them. */
  readonly linkUndo: ReadonlyArray<readonly string[]>;
  /** Links (bridges, VLAN sub-interfaces) varco created and still owns: removed once the policy drops them. */
  readonly ownedLinks?: readonly string[];
  /** keepalived.conf before this generation wrote it (undefined = the file did not exist). */
  readonly keepalivedBefore: string | undefined;
  readonly keepalivedFile: string;
  /** keepalived's pid file, to reload it on rollback (absent in older generations). */
  readonly keepalivedPidFile?: string;
}

export interface Pending {
  readonly generation: number;
  /** ms since epoch. */
  readonly deadline: number;
  readonly token: string;
}

/** The desired state of the host for network policy `n`; `services` are the gateway's own listeners (for the input chain). */
export function desiredState(n: NetworkPolicy, k: KeepalivedInputs, services?: GatewayServices): Desired {
  return {
    network: n,
    table: n.table,
    nft: renderNft(n, services),
    links: renderLinkOps(n),
    keepalived: n.vips.length > 0 ? renderKeepalived(n, k) : undefined,
    keepalivedFile: n.keepalived.config_file,
    keepalivedMainFile: n.keepalived.main_config,
    keepalivedPidFile: n.keepalived.pid_file,
  };
}

/** Removes counter values so listings compare equal regardless of traffic. */
export function normaliseListing(text: string): string {
  return text.replace(/counter packets \d+ bytes \d+/g, "counter").trimEnd();
}

// ---------------------------------------------------------------- structure of a table

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Zeroes what traffic and time change (counter packets/bytes, quota used, element expiry); drops handles. */
function normaliseJson(v: Json): Json {
  if (Array.isArray(v)) return v.map(normaliseJson);
  if (v === null || typeof v !== "object") return v;
  const out: { [k: string]: Json } = {};
  for (const [k, x] of Object.entries(v)) {
    if (k === "handle" || k === "expires") continue;
    if ((k === "packets" || k === "bytes" || k === "used") && typeof x === "number") out[k] = 0;
    else out[k] = normaliseJson(x);
  }
  return out;
}

/**
 * One set or map element of `nft -j` output as nft syntax, e.g. `203.0.113.10 . tcp . 2222 : 10.10.1.99 . 22`
 * (the way nft.ts writes elements). Anything it does not know is printed as JSON, so it still compares.
 */
export function formatElement(e: Json): string {
  if (e === null) return "null";
  if (typeof e !== "object") return String(e);
  if (!Array.isArray(e) && Array.isArray(e.concat)) return e.concat.map(formatElement).join(" . ");
  if (Array.isArray(e)) return e.length === 2 ? `${formatElement(e[0] ?? null)} : ${formatElement(e[1] ?? null)}` : JSON.stringify(e);
  const keys = Object.keys(e);
  const [k] = keys;
  if (keys.length !== 1 || k === undefined) return JSON.stringify(e);
  const x = e[k] ?? null;
  if (x === null) return k; // verdicts: accept, drop, continue, return
  if (k === "concat" && Array.isArray(x)) return x.map(formatElement).join(" . ");
  if (k === "prefix" && typeof x === "object" && !Array.isArray(x)) return `${String(x.addr)}/${String(x.len)}`;
  if (k === "range" && Array.isArray(x)) return x.map(formatElement).join("-");
  if ((k === "jump" || k === "goto") && typeof x === "object" && !Array.isArray(x)) return `${k} ${String(x.target)}`;
  if (k === "elem" && typeof x === "object" && !Array.isArray(x)) {
    const rest = Object.entries(x).filter(([key]) => key !== "val" && key !== "counter");
    const extra = rest.map(([key, val]) => (key === "comment" ? `comment ${JSON.stringify(val)}` : `${key} ${JSON.stringify(val)}`));
    return [formatElement(x.val ?? null), ...extra].join(" ");
  }
  return JSON.stringify(e);
}

/** A structural view of the live table; `undefined` when the table does not exist. */
interface LiveTable {
  readonly snapshot: TableSnapshot;
  /** Live elements per set/map (dynamic sets omitted). */
  readonly elements: ReadonlyMap<string, readonly string[]>;
  /** The raw `nft -j` text. */
  readonly raw: string;
}

/** `nft -j list table inet T` as a structure (nft(8) JSON output, libnftables-json(5)). */
async function liveTable(r: CommandRunner, table: string): Promise<LiveTable | undefined> {
  const res = await r.run(["nft", "-j", "list", "table", "inet", table], { allowFailure: true });
  // No table (or, with a recording runner, no answer at all).
  if (res.exitCode !== 0 || res.stdout.trim() === "") return undefined;
  const doc = JSON.parse(res.stdout) as { nftables?: Array<Record<string, Json>> };
  const skeleton: string[] = [];
  const markers: Record<string, string[] | "dynamic"> = {};
  const elements = new Map<string, string[]>();
  for (const o of doc.nftables ?? []) {
    const [kind] = Object.keys(o);
    if (kind === undefined || kind === "metainfo") continue;
    const body = { ...(o[kind] as { [k: string]: Json }) };
    if (kind === "set" || kind === "map") {
      const key = `${kind} ${String(body.name)}`;
      const flags = Array.isArray(body.flags) ? body.flags : [];
      const dynamic = flags.includes("dynamic") || flags.includes("timeout");
      const elem = Array.isArray(body.elem) ? body.elem : [];
      delete body.elem;
      if (dynamic) markers[key] = "dynamic";
      else {
        const list = elem.map(formatElement).sort();
        markers[key] = list;
        elements.set(key, list);
      }
    }
    skeleton.push(`${kind} ${JSON.stringify(normaliseJson(body))}`);
  }
  return { snapshot: { skeleton, elements: markers }, elements, raw: res.stdout };
}

/**
 * The element lists written in an nft script (`elements = { a, b }` inside `set NAME {…}` / `map NAME {…}`),
 * by `set NAME` / `map NAME`, whitespace collapsed; and the script with those lists removed (its skeleton).
 */
export function splitElements(script: string): { skeleton: string; elements: Map<string, string[]> } {
  const elements = new Map<string, string[]>();
  const owners = [...script.matchAll(/\b(set|map)\s+([A-Za-z0-9_.-]+)\s*\{/g)];
  let skeleton = "";
  let last = 0;
  const re = /elements\s*=\s*\{/g;
  // Jumps between the characters that matter (quotes, braces, commas) instead of walking every one.
  const token = /["{},]/g;
  for (let m = re.exec(script); m !== null; m = re.exec(script)) {
    const at = m.index;
    let owner: RegExpMatchArray | undefined;
    for (const o of owners) {
      if ((o.index ?? 0) >= at) break;
      owner = o;
    }
    let depth = 1;
    let quoted = false;
    let from = at + m[0].length;
    let end = script.length;
    const parts: string[] = [];
    token.lastIndex = from;
    for (let t = token.exec(script); t !== null; t = token.exec(script)) {
      const c = t[0];
      if (quoted) {
        if (c === '"') quoted = false;
      } else if (c === '"') quoted = true;
      else if (c === "{") depth++;
      else if (c === "}" && --depth === 0) {
        end = t.index;
        break;
      } else if (c === "," && depth === 1) {
        parts.push(script.slice(from, t.index));
        from = t.index + 1;
      }
    }
    parts.push(script.slice(from, end));
    const list = parts.map((p) => p.replace(/\s+/g, " ").trim()).filter((p) => p !== "");
    if (owner) {
      const key = `${owner[1]} ${owner[2]}`;
      elements.set(key, [...(elements.get(key) ?? []), ...list]);
    }
    skeleton += script.slice(last, at);
    last = end + 1;
    re.lastIndex = last;
  }
  skeleton += script.slice(last);
  return { skeleton: skeleton.replace(/[ \t]+\n/g, "\n"), elements };
}

/** The snapshot to record: live structure, with element lists equal to the rendered ones stored as `"rendered"`. */
function recordSnapshot(live: LiveTable, desiredNft: string): TableSnapshot {
  const rendered = splitElements(desiredNft).elements;
  const out: Record<string, readonly string[] | "rendered" | "dynamic"> = {};
  for (const [k, v] of Object.entries(live.snapshot.elements)) {
    if (typeof v === "string") out[k] = "dynamic";
    else out[k] = sameList(v, [...(rendered.get(k) ?? [])].sort()) ? "rendered" : v;
  }
  return { skeleton: live.snapshot.skeleton, elements: out };
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The elements a generation expects in `key` (sorted), or undefined for a dynamic set. */
function expectedElements(gen: Generation, key: string, rendered: () => Map<string, string[]>): readonly string[] | undefined {
  const m = gen.snapshot?.elements[key];
  if (m === "dynamic") return undefined;
  if (m === "rendered") return [...(rendered().get(key) ?? [])].sort();
  return m ?? [];
}

/** Key part of a map element (`k : v` → `k`); a set element is its own key. */
const elementKey = (e: string) => {
  const i = e.indexOf(" : ");
  return i < 0 ? e : e.slice(0, i);
};

/** What differs between the elements a generation applied and the live ones, one line each (at most `max` per set). */
function elementDrift(gen: Generation, live: LiveTable, table: string, max = 20): string[] {
  const out: string[] = [];
  let renderedCache: Map<string, string[]> | undefined;
  const rendered = () => {
    renderedCache ??= splitElements(gen.desired.nft).elements;
    return renderedCache;
  };
  const keys = new Set([...Object.keys(gen.snapshot?.elements ?? {}), ...live.elements.keys()]);
  for (const key of keys) {
    const want = expectedElements(gen, key, rendered);
    const have = live.elements.get(key);
    if (want === undefined || have === undefined) continue;
    if (sameList(want, have)) continue;
    const wantSet = new Set(want);
    const haveSet = new Set(have);
    const removed = want.filter((e) => !haveSet.has(e));
    const added = have.filter((e) => !wantSet.has(e));
    const removedByKey = new Map(removed.map((e) => [elementKey(e), e]));
    const lines: string[] = [];
    for (const e of added) {
      const old = key.startsWith("map ") ? removedByKey.get(elementKey(e)) : undefined;
      if (old !== undefined) {
        removedByKey.delete(elementKey(e));
        lines.push(`${key} in table inet ${table}: element changed by hand: ${old}  →  ${e}`);
      } else lines.push(`${key} in table inet ${table}: element added by hand: ${e}`);
    }
    for (const e of removedByKey.values()) lines.push(`${key} in table inet ${table}: element removed by hand: ${e}`);
    out.push(...lines.slice(0, max));
    if (lines.length > max) out.push(`${key} in table inet ${table}: … and ${lines.length - max} more element differences`);
  }
  return out;
}

/** A hash of the live table's structure and elements (for a saved plan's host fingerprint). */
function tableFingerprint(live: LiveTable | undefined): string {
  if (!live) return sha256("absent");
  return sha256(JSON.stringify([live.snapshot.skeleton, [...live.elements.entries()].sort(([a], [b]) => a.localeCompare(b))]));
}

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

// ---------------------------------------------------------------- generations on disk

/**
 * The default folder of the network generations for a gateway state folder: `<state_dir>/net`
 * (`network.state_dir` overrides it). Every function here takes that folder itself (`netDir`).
 */
export function netStateDir(stateDir: string): string {
  return join(stateDir, "net");
}

function writeJsonAtomic(file: string, value: unknown): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileAtomic.sync(file, `${JSON.stringify(value)}\n`, { mode: 0o600 });
}

export function listGenerations(dir: string): Generation[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => /^gen-\d+\.json$/.test(f))
    .map((f) => JSON.parse(readFileSync(join(dir, f), "utf8")) as Generation)
    .sort((a, b) => a.id - b.id);
}

function currentPointer(dir: string): number | undefined {
  const f = join(dir, "current");
  return existsSync(f) ? Number(readFileSync(f, "utf8").trim()) : undefined;
}

export function currentGeneration(dir: string): Generation | undefined {
  const id = currentPointer(dir);
  return id === undefined ? undefined : readGeneration(dir, id);
}

function readGeneration(dir: string, id: number): Generation | undefined {
  const f = join(dir, `gen-${id}.json`);
  return existsSync(f) ? (JSON.parse(readFileSync(f, "utf8")) as Generation) : undefined;
}

/** Generation ids on disk, ascending (without reading them). */
function generationIds(dir: string): number[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .map((f) => /^gen-(\d+)\.json$/.exec(f)?.[1])
    .filter((x): x is string => x !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}

/** Generations kept on disk for rollback. */
const KEEP_GENERATIONS = 10;

function setCurrent(dir: string, id: number | undefined): void {
  const f = join(dir, "current");
  if (id === undefined) rmSync(f, { force: true });
  else writeFileAtomic.sync(f, `${id}\n`, { mode: 0o600 });
}

export function readPending(dir: string): Pending | undefined {
  const f = join(dir, "pending.json");
  return existsSync(f) ? (JSON.parse(readFileSync(f, "utf8")) as Pending) : undefined;
}

// ---------------------------------------------------------------- one at a time

/** Another varco net command holds the state folder's lock. */
export class NetLockedError extends Error {
  readonly pid: number | undefined;
  readonly holder: string | undefined;
  constructor(lockPath: string, owner: { pid?: number; holder?: string; since?: string } | undefined) {
    super(
      `another varco net command is running: ${owner?.holder ?? "unknown command"} (pid ${owner?.pid ?? "unknown"}${owner?.since ? `, since ${owner.since}` : ""}) holds ${lockPath}. ` +
        "Wait for it to finish and run the command again; a lock whose process died is released by itself after 10 s.",
    );
    this.name = "NetLockedError";
    this.pid = owner?.pid;
    this.holder = owner?.holder;
  }
}

/** Lock paths this process holds, with their depth (the lock is re-entrant within one process). */
const held = new Map<string, number>();

/**
 * Runs `fn` holding `<state_dir>/net/lock` (proper-lockfile: an atomic mkdir, refreshed every 2 s,
 * stale after 10 s when its process died), so that apply, rollback, confirm, the confirm-wait
 * watcher's revert and `net restore` never run at the same time on one state folder. `holder`
 * (e.g. "net apply") and this pid are written to `<state_dir>/net/lock.owner` for the message
 * another command gets. Re-entrant within one process. Never waits.
 * @throws NetLockedError at once when another process holds the lock.
 */
export async function withNetLock<T>(netDir: string, holder: string, fn: () => Promise<T>): Promise<T> {
  const dir = netDir;
  const lockPath = join(dir, "lock");
  const depth = held.get(lockPath) ?? 0;
  if (depth > 0) {
    held.set(lockPath, depth + 1);
    try {
      return await fn();
    } finally {
      held.set(lockPath, (held.get(lockPath) ?? 1) - 1);
    }
  }
  // As root, the generations this command reads and writes must be root's alone (trust.ts).
  if (process.geteuid?.() === 0) {
    const untrusted = untrustedStateProblem(dir);
    if (untrusted) throw new Error(`varco ${holder}: REFUSED: ${untrusted}`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ownerFile = join(dir, "lock.owner");
  let release: () => Promise<void>;
  try {
    release = await lockfile.lock(dir, {
      lockfilePath: lockPath,
      realpath: false,
      retries: 0,
      stale: 10_000,
      update: 2_000,
      onCompromised: (err) => console.error(`varco net: the lock ${lockPath} was lost while held: ${err.message}`),
    });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ELOCKED") throw err;
    let owner: { pid?: number; holder?: string; since?: string } | undefined;
    try {
      owner = JSON.parse(readFileSync(ownerFile, "utf8")) as typeof owner;
    } catch {
      owner = undefined;
    }
    throw new NetLockedError(lockPath, owner);
  }
  held.set(lockPath, 1);
  try {
    writeFileSync(ownerFile, `${JSON.stringify({ pid: process.pid, holder, since: new Date().toISOString() })}\n`, { mode: 0o600 });
    return await fn();
  } finally {
    held.delete(lockPath);
    rmSync(ownerFile, { force: true });
    await release().catch(() => undefined);
  }
}

// ---------------------------------------------------------------- live state

/**
 * `nft -t list table` of varco's table. `terse` (nft -t) omits set and map elements: enough to show
 * rules changed by hand as a text diff.
 */
async function liveListing(r: CommandRunner, table: string, terse = true): Promise<string | undefined> {
  const res = await r.run(["nft", ...(terse ? ["-t"] : []), "list", "table", "inet", table], { allowFailure: true });
  return res.exitCode === 0 ? res.stdout : undefined;
}

function satisfied(c: LinkCheck, live: Map<string, LiveLink>): boolean {
  return linkCheckHolds(c, live);
}

// ---------------------------------------------------------------- plan

export interface Plan {
  readonly nftDiff: string;
  readonly nftChanged: boolean;
  readonly linkOps: readonly LinkOp[];
  readonly keepalivedDiff: string;
  readonly keepalivedChanged: boolean;
  /** Live state differs from what the current generation applied (someone changed it by hand), one line each. */
  readonly drift: readonly string[];
  readonly changed: boolean;
  /** Why this policy must not be applied to this host as it is now (each with the fix); apply refuses while any. */
  readonly refusals: readonly string[];
  /** The live `nft -j list table` output the plan was made from (undefined = no table). */
  readonly liveListing: string | undefined;
}

interface PlanAndLive {
  readonly plan: Plan;
  readonly table: LiveTable | undefined;
}

async function planWithLive(r: CommandRunner, d: Desired, netDir: string, withDiff: boolean): Promise<PlanAndLive> {
  const dir = netDir;
  const gen = currentGeneration(dir);
  const [tbl, live, kaLive, kaGen] = await Promise.all([
    liveTable(r, d.table),
    liveLinks(r),
    d.keepalived !== undefined ? r.readFile(d.keepalivedFile) : Promise.resolve(undefined),
    gen?.desired.keepalived !== undefined ? r.readFile(gen.keepalivedFile) : Promise.resolve(undefined),
  ]);
  const drift = await driftOf(r, d, gen, tbl, live, kaGen);
  const base = gen?.desired.nft ?? "";
  const nftChanged = gen === undefined || base !== d.nft || tbl === undefined || drift.length > 0;
  const nftDiff =
    withDiff && nftChanged ? createTwoFilesPatch("applied", "desired", base, d.nft, undefined, undefined, { context: 2 }) : "";
  const linkOps = [
    ...removedLinkOps(gen?.ownedLinks ?? [], d.network, live),
    ...d.links.filter((op) => !satisfied(op.check, live)).map((op) => withLiveUndo(op, live)),
  ];
  const ka = d.keepalived !== undefined ? kaLive : undefined;
  const keepalivedChanged = d.keepalived !== undefined && ka !== d.keepalived;
  const keepalivedDiff = keepalivedChanged
    ? createTwoFilesPatch(
        d.keepalivedFile,
        "desired",
        redactKeepalived(ka ?? ""),
        redactKeepalived(d.keepalived ?? ""),
        undefined,
        undefined,
        { context: 2 },
      )
    : "";
  const p: Plan = {
    nftDiff,
    nftChanged,
    linkOps,
    keepalivedDiff,
    keepalivedChanged,
    drift,
    changed: nftChanged || linkOps.length > 0 || keepalivedChanged,
    refusals: await liveRefusals(r, d.network, live),
    liveListing: tbl?.raw,
  };
  return { plan: p, table: tbl };
}

/** What `apply` would change, as diffs (secrets masked), with the drift of the live host from the current generation. */
export async function plan(r: CommandRunner, d: Desired, netDir: string, opts: { diff?: boolean } = {}): Promise<Plan> {
  return (await planWithLive(r, d, netDir, opts.diff ?? true)).plan;
}

/**
 * Drift: the live host against what generation `gen` applied. The table is compared structurally
 * (`nft -j`: chains, rules, set/map declarations and every element); a rule difference is shown as
 * a diff of `nft -t list table`, an element difference as the element itself.
 */
async function driftOf(
  r: CommandRunner,
  d: Desired,
  gen: Generation | undefined,
  tbl: LiveTable | undefined,
  live: Map<string, LiveLink>,
  kaInstalled: string | undefined,
): Promise<string[]> {
  const out: string[] = [];
  if (!gen) return out;
  if (tbl === undefined) out.push(`table inet ${d.table} is missing (deleted by hand?)`);
  else if (!gen.snapshot || !sameList(gen.snapshot.skeleton, tbl.snapshot.skeleton)) {
    const text = normaliseListing((await liveListing(r, d.table)) ?? "");
    if (text !== gen.listing) {
      const patch = createTwoFilesPatch("applied", "live", gen.listing, text, undefined, undefined, { context: 0 });
      out.push(`table inet ${d.table} was changed outside varco:\n${patch.split("\n").slice(4).join("\n")}`);
    } else if (gen.snapshot) {
      const had = new Set(gen.snapshot.skeleton);
      const has = new Set(tbl.snapshot.skeleton);
      const diff = [
        ...gen.snapshot.skeleton.filter((x) => !has.has(x)).map((x) => `-${x}`),
        ...tbl.snapshot.skeleton.filter((x) => !had.has(x)).map((x) => `+${x}`),
      ];
      out.push(`table inet ${d.table} was changed outside varco:\n${diff.join("\n") || "(objects reordered)"}`);
    }
  }
  if (tbl !== undefined && gen.snapshot) out.push(...elementDrift(gen, tbl, d.table));
  for (const op of d.links) if (!satisfied(op.check, live)) out.push(`missing: ${op.describe}`);
  if (gen.desired.keepalived !== undefined && kaInstalled !== gen.desired.keepalived) {
    out.push(`${gen.keepalivedFile} differs from what varco wrote`);
  }
  return out;
}

// ---------------------------------------------------------------- element deltas

/**
 * Whether an element, as written in an nft script, is spelled exactly as `nft -j` lists it back
 * (decimal numbers, lowercase names, addresses in canonical form, prefixes without host bits and
 * shorter than the address, ranges): only such elements are applied as deltas, so the generation's
 * record stays exact without listing the table again.
 */
export function canonicalElement(e: string): boolean {
  if (/["{}]/.test(e)) return false;
  return e.split(/ (?:\.|:) /).every((atom) => canonicalAtom(atom) || canonicalRange(atom));
}

function canonicalRange(atom: string): boolean {
  const m = /^([^-]+)-([^-]+)$/.exec(atom);
  if (!m?.[1] || !m[2] || !canonicalAtom(m[1]) || !canonicalAtom(m[2]) || m[1].includes("/") || m[2].includes("/")) return false;
  if (/^\d+$/.test(m[1]) && /^\d+$/.test(m[2])) return Number(m[1]) < Number(m[2]);
  return ipaddr.isValid(m[1]) && ipaddr.isValid(m[2]);
}

function canonicalAtom(atom: string): boolean {
  if (/^(0|[1-9]\d{0,9})$/.test(atom)) return true;
  if (/^[a-z][a-z0-9]*$/.test(atom)) return true;
  const [addr, len, extra] = atom.split("/");
  if (addr === undefined || extra !== undefined || !ipaddr.isValid(addr)) return false;
  const ip = ipaddr.parse(addr);
  if (ip.toString() !== addr) return false;
  if (ip.kind() === "ipv4" && !ipaddr.IPv4.isValidFourPartDecimal(addr)) return false;
  if (len === undefined) return true;
  if (!/^(0|[1-9]\d*)$/.test(len)) return false;
  const bits = ip.kind() === "ipv4" ? 32 : 128;
  if (Number(len) >= bits) return false;
  try {
    const net = ip.kind() === "ipv4" ? ipaddr.IPv4.networkAddressFromCIDR(atom) : ipaddr.IPv6.networkAddressFromCIDR(atom);
    return net.toString() === addr;
  } catch {
    return false;
  }
}

/** Elements per nft command line, so one line stays a reasonable size. */
const DELTA_CHUNK = 1000;

/**
 * The nft script that turns the elements of `before` into those of `after` (`delete element` then
 * `create element`, nft(8) SETS/MAPS; `create` fails on an existing key, so a hand-added element
 * in the way makes the transaction fail instead of being kept silently). Undefined when the change
 * is not elements only, or an element is not canonical, or the set's record is not `"rendered"`.
 */
function elementDeltaScript(
  table: string,
  snapshot: TableSnapshot,
  before: Map<string, string[]>,
  after: Map<string, string[]>,
): { script: string; changed: string[] } | undefined {
  const lines: string[] = [];
  const creates: string[] = [];
  const changed: string[] = [];
  for (const key of new Set([...before.keys(), ...after.keys()])) {
    const old = new Set(before.get(key) ?? []);
    const now = new Set(after.get(key) ?? []);
    const removed = [...old].filter((e) => !now.has(e));
    const added = [...now].filter((e) => !old.has(e));
    if (removed.length === 0 && added.length === 0) continue;
    if (snapshot.elements[key] !== "rendered") return undefined;
    if (![...removed, ...added].every(canonicalElement)) return undefined;
    const [kind, name] = key.split(" ");
    if ((kind !== "set" && kind !== "map") || !name) return undefined;
    changed.push(key);
    const dels = kind === "map" ? removed.map(elementKey) : removed;
    for (let i = 0; i < dels.length; i += DELTA_CHUNK)
      lines.push(`delete element inet ${table} ${name} { ${dels.slice(i, i + DELTA_CHUNK).join(", ")} }`);
    for (let i = 0; i < added.length; i += DELTA_CHUNK)
      creates.push(`create element inet ${table} ${name} { ${added.slice(i, i + DELTA_CHUNK).join(", ")} }`);
  }
  if (changed.length === 0) return undefined;
  return { script: `${[...lines, ...creates].join("\n")}\n`, changed };
}

/**
 * The fast path of apply: when the policy changed only set/map elements (say, one port forward) and
 * the live table still has the rules this generation applied, the change is one `nft -f` transaction
 * of element commands instead of a new table. Returns undefined (nothing done) whenever that does not
 * hold, so the caller replaces the table.
 */
async function applyElementDelta(r: CommandRunner, d: Desired, netDir: string): Promise<ApplyResult | undefined> {
  const dir = netDir;
  const gen = currentGeneration(dir);
  if (!gen?.snapshot || gen.desired.table !== d.table || gen.desired.keepalived !== d.keepalived || gen.desired.nft === d.nft)
    return undefined;
  // The live reads run while the element lists are compared.
  const reads = Promise.all([
    liveListing(r, d.table),
    liveLinks(r),
    d.keepalived !== undefined ? r.readFile(d.keepalivedFile) : Promise.resolve(undefined),
  ]);
  const before = splitElements(gen.desired.nft);
  const after = splitElements(d.nft);
  const delta = before.skeleton === after.skeleton ? elementDeltaScript(d.table, gen.snapshot, before.elements, after.elements) : undefined;
  const [listing, live, ka] = await reads;
  if (!delta) return undefined;
  // Rules or declarations changed by hand, links missing, keepalived.conf edited: replace everything.
  if (listing === undefined || normaliseListing(listing) !== gen.listing) return undefined;
  if (d.links.some((op) => !satisfied(op.check, live))) return undefined;
  if (d.keepalived !== undefined && ka !== d.keepalived) return undefined;
  const refusals = await liveRefusals(r, d.network, live);
  if (refusals.length > 0) throw new ApplyError("checks against this host", new Error(refusals.join("; ")), false);
  // One transaction: if any command fails (an element deleted or added by hand), nothing changed.
  let res: { exitCode: number };
  try {
    res = await r.run(["nft", "-f", "-"], { input: delta.script, allowFailure: true });
  } catch (err) {
    throw new ApplyError("nft -f (set/map element changes, one transaction)", err, false);
  }
  if (res.exitCode !== 0) return undefined;
  const elements = { ...gen.snapshot.elements };
  for (const k of delta.changed) elements[k] = "rendered";
  const id = writeGeneration(dir, {
    desired: { table: d.table, nft: d.nft, keepalived: d.keepalived },
    listing: gen.listing,
    snapshot: { skeleton: gen.snapshot.skeleton, elements },
    linkUndo: [],
    keepalivedBefore: gen.keepalivedBefore,
    keepalivedFile: d.keepalivedFile,
    keepalivedPidFile: d.keepalivedPidFile,
  });
  const p: Plan = {
    nftDiff: "",
    nftChanged: true,
    linkOps: [],
    keepalivedDiff: "",
    keepalivedChanged: false,
    drift: [],
    changed: true,
    refusals: [],
    liveListing: undefined,
  };
  return { generation: id, plan: p, changed: true, mode: "elements" };
}

/** Writes generation N+1, makes it current, prunes old ones; returns its id. */
function writeGeneration(dir: string, g: Omit<Generation, "id" | "appliedAt">): number {
  const ids = generationIds(dir);
  const id = (ids[ids.length - 1] ?? 0) + 1;
  writeJsonAtomic(join(dir, `gen-${id}.json`), { id, appliedAt: new Date().toISOString(), ...g } satisfies Generation);
  setCurrent(dir, id);
  for (const old of ids.slice(0, Math.max(0, ids.length + 1 - KEEP_GENERATIONS))) rmSync(join(dir, `gen-${old}.json`), { force: true });
  return id;
}

// ---------------------------------------------------------------- apply

async function reloadKeepalived(r: CommandRunner, pidFile: string | undefined): Promise<void> {
  if (pidFile === undefined) return;
  const pid = (await r.readFile(pidFile))?.trim();
  // keepalived(8): SIGHUP reloads the configuration.
  if (pid && /^\d+$/.test(pid)) await r.run(["kill", "-HUP", pid], { allowFailure: true });
}

/** Puts back an nft table exactly as listed (a listing is valid nft input), or removes it. */
async function restoreTable(r: CommandRunner, table: string, listing: string | undefined): Promise<void> {
  const script = listing === undefined ? renderNftDelete(table) : `table inet ${table}\ndelete table inet ${table}\n${listing}`;
  await r.run(["nft", "-f", "-"], { input: script });
}

export interface ApplyResult {
  /** The generation now current (the existing one when nothing changed). */
  readonly generation: number;
  readonly plan: Plan;
  /** False when the host already matched: no command ran and no generation was made. */
  readonly changed: boolean;
  /** `none`: nothing to do; `elements`: only set/map elements changed, applied as deltas; `table`: the table replaced. */
  readonly mode: "none" | "elements" | "table";
}

/**
 * Applies the desired state, holding the state folder's lock (withNetLock): keepalived config test →
 * links (with undo) → one `nft -f` transaction → keepalived.conf written atomically and reloaded. A
 * change of set/map elements only (e.g. one port forward) is one transaction of element commands.
 * A host that already matches makes no new generation. Any failure undoes what was done, restores
 * the previous nft table and keepalived.conf, and throws ApplyError.
 * @throws NetLockedError when another varco net command is running.
 */
export async function apply(r: CommandRunner, d: Desired, netDir: string): Promise<ApplyResult> {
  return withNetLock(netDir, "net apply", () => applyLocked(r, d, netDir));
}

async function applyLocked(r: CommandRunner, d: Desired, netDir: string): Promise<ApplyResult> {
  const dir = netDir;
  const fast = await applyElementDelta(r, d, netDir);
  if (fast) return fast;
  const { plan: p } = await planWithLive(r, d, netDir, false);
  if (p.refusals.length > 0) throw new ApplyError("checks against this host", new Error(p.refusals.join("; ")), false);
  const current = currentGeneration(dir);
  if (!p.changed && current) return { generation: current.id, plan: p, changed: false, mode: "none" };
  // nft -f is one transaction: if it fails nothing changed. Only a failure after it (keepalived)
  // needs the old table back, so only then is the full listing taken first.
  const willChangeKeepalived = d.keepalived !== undefined && p.keepalivedChanged;
  const before = willChangeKeepalived && p.liveListing !== undefined ? await liveListing(r, d.table, false) : undefined;
  const kaBefore = d.keepalived !== undefined ? await r.readFile(d.keepalivedFile) : undefined;

  if (d.keepalived !== undefined && p.keepalivedChanged) {
    const test = join(dirname(d.keepalivedFile), `.keepalived.varco-test-${randomUUID()}.conf`);
    await r.writeFile(test, d.keepalived);
    try {
      // keepalived(8) --config-test exits non-zero on errors it finds.
      await r.run(["keepalived", "--config-test", "-f", test]);
    } catch (err) {
      throw new ApplyError("keepalived --config-test", err);
    } finally {
      await r.removeFile(test);
    }
  }

  const undo: Array<readonly string[]> = [];
  let nftApplied = false;
  const rollbackPartial = async () => {
    if (nftApplied) await restoreTable(r, d.table, before).catch(() => undefined);
    for (const u of [...undo].reverse()) await r.run(u, { allowFailure: true });
    if (d.keepalived !== undefined && p.keepalivedChanged) {
      if (kaBefore === undefined) await r.removeFile(d.keepalivedFile);
      else await r.writeFile(d.keepalivedFile, kaBefore);
      await reloadKeepalived(r, d.keepalivedPidFile);
    }
  };

  let step = "links";
  try {
    for (const op of p.linkOps) {
      step = op.describe;
      await r.run(op.argv);
      if (op.undo) undo.push(op.undo);
    }
    step = "nft -f (one transaction)";
    await r.run(["nft", "-f", "-"], { input: d.nft });
    nftApplied = true;
    if (d.keepalived !== undefined && p.keepalivedChanged) {
      step = `write ${d.keepalivedFile}`;
      await r.writeFile(d.keepalivedFile, d.keepalived);
      // The whole configuration keepalived will load (the operator's file including ours), keepalived(8) --config-test.
      if (d.keepalivedMainFile !== d.keepalivedFile && (await r.readFile(d.keepalivedMainFile)) !== undefined) {
        step = `keepalived --config-test -f ${d.keepalivedMainFile}`;
        await r.run(["keepalived", "--config-test", "-f", d.keepalivedMainFile]);
      }
      step = "reload keepalived";
      await reloadKeepalived(r, d.keepalivedPidFile);
    }
  } catch (err) {
    await rollbackPartial();
    throw new ApplyError(step, err);
  }

  const [after, listing] = await Promise.all([liveTable(r, d.table), liveListing(r, d.table)]);
  const id = writeGeneration(dir, {
    desired: { table: d.table, nft: d.nft, keepalived: d.keepalived },
    listing: normaliseListing(listing ?? ""),
    ...(after ? { snapshot: recordSnapshot(after, d.nft) } : {}),
    // Links created earlier stay owned by the generation that created them.
    linkUndo: [...undo].reverse(),
    ownedLinks: ownedLinks(current?.ownedLinks ?? [], d.network, p.linkOps),
    keepalivedBefore: p.keepalivedChanged ? kaBefore : current?.keepalivedBefore,
    keepalivedFile: d.keepalivedFile,
    keepalivedPidFile: d.keepalivedPidFile,
  });
  return { generation: id, plan: p, changed: true, mode: "table" };
}

/**
 * Restores the generation before the current one, holding the lock: the current generation's links
 * are undone, the previous nft table and keepalived.conf put back, and keepalived reloaded (SIGHUP to
 * the pid in its pid file) so the running VRRP instances and VIPs follow. With no previous
 * generation, varco's table is removed.
 * @throws NetLockedError when another varco net command is running.
 */
export async function rollback(r: CommandRunner, netDir: string): Promise<Generation | undefined> {
  return withNetLock(netDir, "net rollback", async () => {
    const dir = netDir;
    const cur = currentGeneration(dir);
    if (!cur) throw new Error("nothing to roll back: no generation has been applied");
    const prevId = generationIds(dir)
      .filter((g) => g < cur.id)
      .pop();
    const prev = prevId === undefined ? undefined : readGeneration(dir, prevId);
    if (prev) {
      await r.run(["nft", "-f", "-"], { input: prev.desired.nft });
    } else {
      await r.run(["nft", "-f", "-"], { input: renderNftDelete(cur.desired.table) });
    }
    for (const u of cur.linkUndo) await r.run(u, { allowFailure: true });
    if (cur.desired.keepalived !== undefined || prev?.desired.keepalived !== undefined) {
      const file = prev?.desired.keepalived !== undefined ? prev.keepalivedFile : cur.keepalivedFile;
      const restore = prev?.desired.keepalived !== undefined ? prev.desired.keepalived : cur.keepalivedBefore;
      if ((await r.readFile(file)) !== restore) {
        if (restore === undefined) await r.removeFile(file);
        else await r.writeFile(file, restore);
        await reloadKeepalived(r, prev?.keepalivedPidFile ?? cur.keepalivedPidFile);
      }
    }
    rmSync(join(dir, `gen-${cur.id}.json`), { force: true });
    setCurrent(dir, prev?.id);
    rmSync(join(dir, "pending.json"), { force: true });
    return prev;
  });
}

/** Records that generation `id` must be confirmed before `deadline` (ms since epoch). */
export function setPending(netDir: string, generation: number, deadline: number): Pending {
  const pending = { generation, deadline, token: randomUUID() };
  writeJsonAtomic(join(netDir, "pending.json"), pending);
  return pending;
}

/**
 * Keeps the current generation, holding the lock (so it cannot race the watcher's revert).
 * Returns false when nothing was pending.
 * @throws NetLockedError when another varco net command is running (e.g. the revert itself).
 */
export async function confirm(netDir: string): Promise<boolean> {
  return withNetLock(netDir, "net confirm", async () => {
    const f = join(netDir, "pending.json");
    if (!existsSync(f)) return false;
    rmSync(f, { force: true });
    return true;
  });
}

/**
 * Rolls back if a pending confirmation expired (at `now`). Called by the detached watcher and by
 * every `varco net` command, so the revert does not depend on the terminal that applied. Takes the
 * lock only when there is something to revert, and checks again under it.
 * Returns true when it rolled back.
 * @throws NetLockedError when it must revert but another varco net command is running.
 */
export async function revertIfExpired(r: CommandRunner, netDir: string, now: number, token?: string): Promise<boolean> {
  const dir = netDir;
  const due = (p: Pending | undefined): p is Pending => p !== undefined && now >= p.deadline && (token === undefined || p.token === token);
  if (!due(readPending(dir))) return false;
  return withNetLock(netDir, "net confirm-wait (automatic revert)", async () => {
    const p = readPending(dir);
    if (!due(p)) return false;
    const cur = currentGeneration(dir);
    if (cur?.id !== p.generation) {
      rmSync(join(dir, "pending.json"), { force: true });
      return false;
    }
    await rollback(r, netDir);
    return true;
  });
}

export interface Status {
  readonly inSync: boolean;
  readonly generation: number | undefined;
  readonly pending: Pending | undefined;
  readonly drift: readonly string[];
  /** The policy renders differently from what was applied (apply not run since the last edit). */
  readonly policyChanged: boolean;
}

/** Live state vs the current generation and the policy (no lock: it only reads). */
export async function status(r: CommandRunner, d: Desired, netDir: string): Promise<Status> {
  const dir = netDir;
  const gen = currentGeneration(dir);
  const [tbl, live, kaInstalled] = await Promise.all([
    liveTable(r, d.table),
    liveLinks(r),
    gen?.desired.keepalived !== undefined ? r.readFile(gen.keepalivedFile) : Promise.resolve(undefined),
  ]);
  const drift = gen
    ? await driftOf(r, d, gen, tbl, live, kaInstalled)
    : [`nothing applied yet (table inet ${d.table} ${tbl === undefined ? "absent" : "present but not varco's generation"})`];
  const policyChanged = gen !== undefined && (gen.desired.nft !== d.nft || gen.desired.keepalived !== d.keepalived);
  return { inSync: drift.length === 0 && !policyChanged, generation: gen?.id, pending: readPending(dir), drift, policyChanged };
}

// ---------------------------------------------------------------- saved plans

/** Hashes of what the host had when a plan was made: varco's table, the links, the keepalived file. */
export interface HostFingerprint {
  readonly table: string;
  readonly links: string;
  readonly keepalived: string;
}

/** A plan saved by `varco net plan --out FILE`: the rendered desired state and the host it was made against. */
export interface SavedPlan {
  readonly format: "varco-net-plan/1";
  readonly createdAt: string;
  readonly desired: Desired;
  /** sha256 of the rendering (nft, links, keepalived), to see whether the policy now renders differently. */
  readonly desiredHash: string;
  readonly host: HostFingerprint;
}

/** sha256 of what a Desired renders to the host (nft script, link operations, keepalived.conf and its path). */
export function desiredHash(d: Desired): string {
  return sha256(JSON.stringify([d.table, d.nft, d.links, d.keepalived ?? null, d.keepalivedFile]));
}

/** The host's fingerprint for `d`: table structure and elements (nft -j), links (name, kind, master, up, addresses), keepalived file. */
export async function hostFingerprint(r: CommandRunner, d: Desired): Promise<HostFingerprint> {
  const [tbl, live, ka] = await Promise.all([liveTable(r, d.table), liveLinks(r), r.readFile(d.keepalivedFile)]);
  const links = [...live.values()]
    .map((l) => ({
      name: l.ifname,
      kind: l.linkinfo?.info_kind ?? null,
      master: l.master ?? null,
      up: Boolean(l.flags?.includes("UP")),
      addrs: (l.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`).sort(),
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
  return { table: tableFingerprint(tbl), links: sha256(JSON.stringify(links)), keepalived: sha256(ka ?? "\u0000absent") };
}

/** Makes the plan to save: `d` as rendered now and the host's fingerprint. */
export async function makeSavedPlan(r: CommandRunner, d: Desired): Promise<SavedPlan> {
  return {
    format: "varco-net-plan/1",
    createdAt: new Date().toISOString(),
    desired: d,
    desiredHash: desiredHash(d),
    host: await hostFingerprint(r, d),
  };
}

/** Writes a saved plan atomically, mode 0600 (it holds the rendered keepalived.conf with its auth_pass). */
export function writeSavedPlan(file: string, s: SavedPlan): void {
  writeFileAtomic.sync(file, `${JSON.stringify(s)}\n`, { mode: 0o600 });
}

/**
 * Reads a plan saved by `writeSavedPlan`.
 * @throws Error naming the file when it is missing, not JSON, or not a varco net plan.
 */
export function readSavedPlan(file: string): SavedPlan {
  let s: Partial<SavedPlan>;
  try {
    s = JSON.parse(readFileSync(file, "utf8")) as Partial<SavedPlan>;
  } catch (err) {
    throw new Error(`${file}: cannot read a saved plan (${(err as Error).message}); make one with \`varco net plan --out ${file}\``);
  }
  if (s.format !== "varco-net-plan/1" || !s.desired || !s.host || !s.desiredHash) {
    throw new Error(`${file}: not a plan saved by \`varco net plan --out\` (format varco-net-plan/1)`);
  }
  return s as SavedPlan;
}

/**
 * Applies exactly the desired state saved in `saved` (holding the lock), after checking that the
 * policy still renders to it (`current`) and that the host is as it was when the plan was made.
 * @throws ApplyError (nothing changed) naming what differs: the policy's rendering (nft rules,
 *   links, keepalived) or the host (table inet T, links, keepalived file); the plan must be made again.
 */
export async function applySavedPlan(
  r: CommandRunner,
  saved: SavedPlan,
  current: Desired,
  netDir: string,
  file = "the saved plan",
): Promise<ApplyResult> {
  return withNetLock(netDir, "net apply --plan", async () => {
    const again = `make the plan again with \`varco net plan --out ${file}\`, review it, and apply that`;
    if (desiredHash(current) !== saved.desiredHash) {
      const d = saved.desired;
      const what = [
        d.table !== current.table || d.nft !== current.nft ? `nft rules (table inet ${current.table})` : "",
        JSON.stringify(d.links) !== JSON.stringify(current.links) ? "links" : "",
        d.keepalived !== current.keepalived || d.keepalivedFile !== current.keepalivedFile ? "keepalived" : "",
      ].filter(Boolean);
      throw new ApplyError(
        `checking ${file}`,
        new Error(`the policy renders differently now than when the plan was made (${what.join(", ")}): ${again}`),
        false,
      );
    }
    const now = await hostFingerprint(r, saved.desired);
    const changed = [
      now.table !== saved.host.table ? `table inet ${saved.desired.table}` : "",
      now.links !== saved.host.links ? "links or addresses" : "",
      now.keepalived !== saved.host.keepalived ? saved.desired.keepalivedFile : "",
    ].filter(Boolean);
    if (changed.length > 0) {
      throw new ApplyError(
        `checking ${file}`,
        new Error(`the host changed since the plan was made (${changed.join(", ")}): ${again}`),
        false,
      );
    }
    return applyLocked(r, saved.desired, netDir);
  });
}
