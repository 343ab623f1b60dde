/**
 * Reconciling the host with the rendered network state: plan, atomic apply with an undo list,
 * confirm-or-revert, rollback to the previous generation, and drift status.
 * Every host command goes through the CommandRunner (argv arrays, optional namespace).
 *
 * Generations live in `<state_dir>/net/`: `gen-N.json` (what was applied, the nft listing right
 * after, the link undo list, the previous keepalived.conf) and `pending.json` (a confirm deadline).
 */
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { createTwoFilesPatch } from "diff";
import type { NetworkPolicy } from "../policy/index.ts";
import { liveRefusals } from "./guard.ts";
import type { GatewayServices } from "./input.ts";
import { type KeepalivedInputs, redactKeepalived, renderKeepalived } from "./keepalived.ts";
import { type LinkCheck, type LinkOp, linkCheckHolds, ownedLinks, removedLinkOps, renderLinkOps, withLiveUndo } from "./links.ts";
import { type LiveLink, liveLinks } from "./live.ts";
import { renderNft, renderNftDelete } from "./nft.ts";
import type { CommandRunner } from "./runner.ts";

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
  readonly keepalivedPidFile: string;
}

export interface Generation {
  readonly id: number;
  readonly appliedAt: string;
  readonly desired: { table: string; nft: string; keepalived: string | undefined };
  /** `nft -t list table` right after the apply, normalised (counters zeroed): drift is any difference. */
  readonly listing: string;
  /** Undo operations of the links this generation created, in the order to run them. */
  readonly linkUndo: ReadonlyArray<readonly string[]>;
  /** Links (bridges, VLAN sub-interfaces) varco created and still owns: removed once the policy drops them. */
  readonly ownedLinks?: readonly string[];
  /** keepalived.conf before this generation wrote it (undefined = the file did not exist). */
  readonly keepalivedBefore: string | undefined;
  readonly keepalivedFile: string;
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
    keepalivedPidFile: n.keepalived.pid_file,
  };
}

/** Removes counter values so listings compare equal regardless of traffic. */
export function normaliseListing(text: string): string {
  return text.replace(/counter packets \d+ bytes \d+/g, "counter").trimEnd();
}

// ---------------------------------------------------------------- generations on disk

export function netStateDir(stateDir: string): string {
  return join(stateDir, "net");
}

function writeJsonAtomic(file: string, value: unknown): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, file);
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
  else {
    writeFileSync(`${f}.tmp`, `${id}\n`, { mode: 0o600 });
    renameSync(`${f}.tmp`, f);
  }
}

export function readPending(dir: string): Pending | undefined {
  const f = join(dir, "pending.json");
  return existsSync(f) ? (JSON.parse(readFileSync(f, "utf8")) as Pending) : undefined;
}

// ---------------------------------------------------------------- live state

/**
 * `nft list table` of varco's table. `terse` (nft -t) omits set and map elements: ten times faster
 * with 10 000 forwards, and enough to see rules changed by hand (elements are rewritten by every apply).
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
  /** Live nft table differs from what the current generation applied (someone changed it by hand). */
  readonly drift: readonly string[];
  readonly changed: boolean;
  /** Why this policy must not be applied to this host as it is now (each with the fix); apply refuses while any. */
  readonly refusals: readonly string[];
  /** The live `nft -t list table` output the plan was made from (undefined = no table). */
  readonly liveListing: string | undefined;
}

/** What `apply` would change, as diffs (secrets masked). */
export async function plan(r: CommandRunner, d: Desired, stateDir: string, opts: { diff?: boolean } = {}): Promise<Plan> {
  const withDiff = opts.diff ?? true;
  const dir = netStateDir(stateDir);
  const gen = currentGeneration(dir);
  const [listing, live, kaLive, kaGen] = await Promise.all([
    liveListing(r, d.table),
    liveLinks(r),
    d.keepalived !== undefined ? r.readFile(d.keepalivedFile) : Promise.resolve(undefined),
    gen?.desired.keepalived !== undefined ? r.readFile(gen.keepalivedFile) : Promise.resolve(undefined),
  ]);
  const drift = driftOf(d, gen, listing, live, kaGen);
  const base = gen?.desired.nft ?? "";
  const nftChanged = gen === undefined || base !== d.nft || listing === undefined || drift.length > 0;
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
  return {
    nftDiff,
    nftChanged,
    linkOps,
    keepalivedDiff,
    keepalivedChanged,
    drift,
    changed: nftChanged || linkOps.length > 0 || keepalivedChanged,
    refusals: liveRefusals(d.network, live),
    liveListing: listing,
  };
}

function driftOf(
  d: Desired,
  gen: Generation | undefined,
  listing: string | undefined,
  live: Map<string, LiveLink>,
  kaInstalled: string | undefined,
): string[] {
  const out: string[] = [];
  if (gen && listing === undefined) out.push(`table inet ${d.table} is missing (deleted by hand?)`);
  if (gen && listing !== undefined && normaliseListing(listing) !== gen.listing) {
    const patch = createTwoFilesPatch("applied", "live", gen.listing, normaliseListing(listing), undefined, undefined, { context: 0 });
    out.push(`table inet ${d.table} was changed outside varco:\n${patch.split("\n").slice(4).join("\n")}`);
  }
  if (gen) {
    for (const op of d.links) if (!satisfied(op.check, live)) out.push(`missing: ${op.describe}`);
    if (gen.desired.keepalived !== undefined && kaInstalled !== gen.desired.keepalived) {
      out.push(`${gen.keepalivedFile} differs from what varco wrote`);
    }
  }
  return out;
}

// ---------------------------------------------------------------- apply

async function reloadKeepalived(r: CommandRunner, pidFile: string): Promise<void> {
  const pid = (await r.readFile(pidFile))?.trim();
  if (pid && /^\d+$/.test(pid)) await r.run(["kill", "-HUP", pid], { allowFailure: true });
}

/** Puts back an nft table exactly as listed (a listing is valid nft input), or removes it. */
async function restoreTable(r: CommandRunner, table: string, listing: string | undefined): Promise<void> {
  const script = listing === undefined ? renderNftDelete(table) : `table inet ${table}\ndelete table inet ${table}\n${listing}`;
  await r.run(["nft", "-f", "-"], { input: script });
}

export interface ApplyResult {
  readonly generation: number;
  readonly plan: Plan;
}

/**
 * Applies the desired state: keepalived config test → links (with undo) → one `nft -f` transaction →
 * keepalived.conf written atomically and reloaded. Any failure undoes what was done, restores the
 * previous nft table and keepalived.conf, and throws ApplyError.
 */
export async function apply(r: CommandRunner, d: Desired, stateDir: string): Promise<ApplyResult> {
  const dir = netStateDir(stateDir);
  const p = await plan(r, d, stateDir, { diff: false });
  if (p.refusals.length > 0) throw new ApplyError("checks against this host", new Error(p.refusals.join("; ")), false);
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
      step = "reload keepalived";
      await reloadKeepalived(r, d.keepalivedPidFile);
    }
  } catch (err) {
    await rollbackPartial();
    throw new ApplyError(step, err);
  }

  const listing = normaliseListing((await liveListing(r, d.table)) ?? "");
  const ids = generationIds(dir);
  const prev = currentGeneration(dir);
  const id = (ids[ids.length - 1] ?? 0) + 1;
  const gen: Generation = {
    id,
    appliedAt: new Date().toISOString(),
    desired: { table: d.table, nft: d.nft, keepalived: d.keepalived },
    listing,
    // Links created earlier stay owned by the generation that created them.
    linkUndo: [...undo].reverse(),
    ownedLinks: ownedLinks(prev?.ownedLinks ?? [], d.network, p.linkOps),
    keepalivedBefore: p.keepalivedChanged ? kaBefore : prev?.keepalivedBefore,
    keepalivedFile: d.keepalivedFile,
  };
  writeJsonAtomic(join(dir, `gen-${id}.json`), gen);
  setCurrent(dir, id);
  for (const old of ids.slice(0, Math.max(0, ids.length + 1 - KEEP_GENERATIONS))) rmSync(join(dir, `gen-${old}.json`), { force: true });
  return { generation: id, plan: p };
}

/**
 * Restores the generation before the current one: the current generation's links are undone, the
 * previous nft table and keepalived.conf put back. With no previous generation, varco's table is removed.
 */
export async function rollback(r: CommandRunner, stateDir: string): Promise<Generation | undefined> {
  const dir = netStateDir(stateDir);
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
  if (cur.desired.keepalived !== undefined) {
    const restore = prev?.desired.keepalived ?? cur.keepalivedBefore;
    if (restore === undefined) await r.removeFile(cur.keepalivedFile);
    else await r.writeFile(cur.keepalivedFile, restore);
  }
  rmSync(join(dir, `gen-${cur.id}.json`), { force: true });
  setCurrent(dir, prev?.id);
  rmSync(join(dir, "pending.json"), { force: true });
  return prev;
}

/** Records that generation `id` must be confirmed before `deadline` (ms since epoch). */
export function setPending(stateDir: string, generation: number, deadline: number): Pending {
  const pending = { generation, deadline, token: randomUUID() };
  writeJsonAtomic(join(netStateDir(stateDir), "pending.json"), pending);
  return pending;
}

/** Keeps the current generation. Returns false when nothing was pending. */
export function confirm(stateDir: string): boolean {
  const f = join(netStateDir(stateDir), "pending.json");
  if (!existsSync(f)) return false;
  rmSync(f, { force: true });
  return true;
}

/**
 * Rolls back if a pending confirmation expired (at `now`). Called by the detached watcher and by
 * every `varco net` command, so the revert does not depend on the terminal that applied.
 * Returns true when it rolled back.
 */
export async function revertIfExpired(r: CommandRunner, stateDir: string, now: number, token?: string): Promise<boolean> {
  const p = readPending(netStateDir(stateDir));
  if (!p || now < p.deadline || (token !== undefined && p.token !== token)) return false;
  const cur = currentGeneration(netStateDir(stateDir));
  if (cur?.id !== p.generation) {
    confirm(stateDir);
    return false;
  }
  await rollback(r, stateDir);
  return true;
}

export interface Status {
  readonly inSync: boolean;
  readonly generation: number | undefined;
  readonly pending: Pending | undefined;
  readonly drift: readonly string[];
  /** The policy renders differently from what was applied (apply not run since the last edit). */
  readonly policyChanged: boolean;
}

/** Live state vs the current generation and the policy. */
export async function status(r: CommandRunner, d: Desired, stateDir: string): Promise<Status> {
  const dir = netStateDir(stateDir);
  const gen = currentGeneration(dir);
  const listing = await liveListing(r, d.table);
  const kaInstalled = gen?.desired.keepalived !== undefined ? await r.readFile(gen.keepalivedFile) : undefined;
  const drift = gen
    ? driftOf(d, gen, listing, await liveLinks(r), kaInstalled)
    : [`nothing applied yet (table inet ${d.table} ${listing === undefined ? "absent" : "present but not varco's generation"})`];
  const policyChanged = gen !== undefined && (gen.desired.nft !== d.nft || gen.desired.keepalived !== d.keepalived);
  return { inSync: drift.length === 0 && !policyChanged, generation: gen?.id, pending: readPending(dir), drift, policyChanged };
}
