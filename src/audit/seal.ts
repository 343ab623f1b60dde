/**
 * Forward-secure sealing of the audit chain (Schneier–Kelsey, "Secure Audit Logs to Support Computer
 * Forensics", 1999; the same idea as journald's Forward Secure Sealing).
 *
 * `varco audit keygen` creates K0 (32 random bytes): the auditor keeps it offline, the gateway keeps it
 * in a state file. Each seal uses the current key K_e once:
 *   seal_e = HMAC-SHA256(K_e, "varco-audit-seal:v1:<node>:<event_id>:<hash>:<epoch>")   (hex)
 * then ratchets K_{e+1} = SHA-256("varco-audit-ratchet:v1" || K_e), writes it atomically over the
 * state file and zeroes K_e. Whoever takes the box at epoch j holds only K_j: seals of epochs < j cannot
 * be recomputed, so rewriting what they cover is caught by {@link checkSeals} with K0.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import {
  closeSync,
  constants,
  fchownSync,
  fstatSync,
  fsyncSync,
  linkSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import type Database from "better-sqlite3";
import type { SealRow, SealStep } from "./store.ts";
import type { VerifyIssue } from "./verify.ts";

/** Bytes of every ratchet key (K0 included). */
export const SEAL_KEY_BYTES = 32;
const RATCHET_DOMAIN = Buffer.from("varco-audit-ratchet:v1", "ascii");
const STATE_MAGIC = "varco-audit-seal-state v1";

/** A sealing state file that is missing, malformed or unsafe. The message never contains key material. */
export class SealStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SealStateError";
  }
}

/** One ratchet step: SHA-256("varco-audit-ratchet:v1" || k), a new 32-byte buffer (`k` is left as is). */
export function ratchetKey(k: Buffer): Buffer {
  return createHash("sha256").update(RATCHET_DOMAIN).update(k).digest();
}

/**
 * K_epoch from K0 by `epoch` ratchet steps (intermediate keys are zeroed).
 * @throws RangeError if `k0` is not 32 bytes or `epoch` is not a non-negative safe integer.
 */
export function deriveEpochKey(k0: Buffer, epoch: number): Buffer {
  if (k0.length !== SEAL_KEY_BYTES) throw new RangeError(`the verification key must be ${SEAL_KEY_BYTES} bytes`);
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw new RangeError("epoch must be a non-negative integer");
  let k: Buffer = Buffer.from(k0);
  for (let e = 0; e < epoch; e++) {
    const next = ratchetKey(k);
    k.fill(0);
    k = next;
  }
  return k;
}

/** The exact text a seal covers: `varco-audit-seal:v1:${node}:${eventId}:${hash}:${epoch}` (node may not contain ':' per the policy schema; the other fields cannot). */
export function sealMessage(node: string, eventId: number, hash: string, epoch: number): string {
  return `varco-audit-seal:v1:${node}:${eventId}:${hash}:${epoch}`;
}

/**
 * The text a prune checkpoint's seal covers: `varco-audit-prune:v1:${node}:${eventId}:${hash}:${epoch}`
 * (another domain than {@link sealMessage}, so a head seal can never pass for a checkpoint seal).
 */
export function checkpointSealMessage(node: string, eventId: number, hash: string, epoch: number): string {
  return `varco-audit-prune:v1:${node}:${eventId}:${hash}:${epoch}`;
}

/** HMAC-SHA256(key, message) as lowercase hex. */
export function computeSeal(key: Buffer, message: string): string {
  return createHmac("sha256", key).update(message, "utf8").digest("hex");
}

/** The anchor a gateway logs (`logger.info({ anchor }, "audit anchor")`) for each seal; slice VERIFY reads these. */
export interface SealAnchor {
  readonly node: string;
  readonly event_id: number;
  readonly hash: string;
  readonly epoch: number;
  readonly seal: string;
}

/** The anchor line's fields for a stored seal row (log only `kind: "head"` rows as anchors). */
export function anchorOf(row: SealRow): SealAnchor {
  return { node: row.node, event_id: row.eventId, hash: row.hash, epoch: row.epoch, seal: row.seal };
}

// Hex codec on Buffers, so key material never becomes an (unerasable) JS string.
const HEX = Buffer.from("0123456789abcdef", "ascii");
function hexEncode(b: Buffer): Buffer {
  const out = Buffer.alloc(b.length * 2);
  for (let i = 0; i < b.length; i++) {
    out[2 * i] = HEX[(b[i] as number) >> 4] as number;
    out[2 * i + 1] = HEX[(b[i] as number) & 15] as number;
  }
  return out;
}
function nibble(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}
function hexDecode(h: Buffer): Buffer | undefined {
  if (h.length % 2 !== 0) return undefined;
  const out = Buffer.alloc(h.length / 2);
  for (let i = 0; i < out.length; i++) {
    const hi = nibble(h[2 * i] as number);
    const lo = nibble(h[2 * i + 1] as number);
    if (hi < 0 || lo < 0) {
      out.fill(0);
      return undefined;
    }
    out[i] = (hi << 4) | lo;
  }
  return out;
}

/**
 * Parses the auditor's verification key: 64 hex digits (surrounding whitespace ignored), as printed by `varco audit keygen`.
 * @throws SealStateError naming the problem (never echoing the input).
 */
export function parseVerificationKey(text: string | Buffer): Buffer {
  const raw = Buffer.isBuffer(text) ? text : Buffer.from(text, "utf8");
  let a = 0;
  let b = raw.length;
  const space = (c: number) => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
  while (a < b && space(raw[a] as number)) a++;
  while (b > a && space(raw[b - 1] as number)) b--;
  const key = b - a === SEAL_KEY_BYTES * 2 ? hexDecode(raw.subarray(a, b)) : undefined;
  if (!key) throw new SealStateError(`the verification key must be ${SEAL_KEY_BYTES * 2} hex digits (as printed by varco audit keygen)`);
  return key;
}

interface SealState {
  epoch: number;
  key: Buffer;
  uid: number;
  gid: number;
}

/**
 * Reads a state file: `varco-audit-seal-state v1\nepoch N\nkey <64 hex>\n`, a regular file (no symlink)
 * not accessible by group or others.
 * @throws SealStateError if missing, unsafe or malformed.
 */
function readSealState(file: string): SealState {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    throw new SealStateError(
      `gateway.audit_seal_state: cannot open ${file} (${(err as NodeJS.ErrnoException).code ?? "error"}); create it with varco audit keygen --out ${file}`,
    );
  }
  let buf: Buffer | undefined;
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new SealStateError(`gateway.audit_seal_state: ${file} is not a regular file`);
    if ((st.mode & 0o077) !== 0)
      throw new SealStateError(
        `gateway.audit_seal_state: ${file} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`,
      );
    buf = readFileSync(fd);
    const at = buf.indexOf("\nkey ");
    const header = at < 0 ? [] : buf.subarray(0, at).toString("ascii").split("\n");
    const m = header.length === 2 && header[0] === STATE_MAGIC ? /^epoch (0|[1-9]\d{0,15})$/.exec(header[1] ?? "") : null;
    const hexStart = at + 5;
    const tailOk = buf.length === hexStart + SEAL_KEY_BYTES * 2 + 1 && buf[buf.length - 1] === 0x0a;
    const key = m && tailOk ? hexDecode(buf.subarray(hexStart, hexStart + SEAL_KEY_BYTES * 2)) : undefined;
    const epoch = Number(m?.[1]);
    if (!key || !Number.isSafeInteger(epoch))
      throw new SealStateError(`gateway.audit_seal_state: ${file} is not a varco sealing state file`);
    return { epoch, key, uid: st.uid, gid: st.gid };
  } finally {
    buf?.fill(0);
    closeSync(fd);
  }
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes `{epoch, key}` to `file` atomically: a new 0600 file in the same folder, written and fsynced,
 * renamed over `file`, then the folder fsynced (rename(2) is atomic; fsync(2) makes it durable).
 * `exclusive` refuses an existing `file` (link(2) instead of rename); `owner` (when running as root)
 * keeps the file's owner so a root CLI does not lock the gateway user out.
 */
function writeSealState(
  file: string,
  epoch: number,
  key: Buffer,
  o: { exclusive?: boolean; owner?: { uid: number; gid: number } } = {},
): void {
  const hex = hexEncode(key);
  const body = Buffer.concat([Buffer.from(`${STATE_MAGIC}\nepoch ${epoch}\nkey `, "ascii"), hex, Buffer.from("\n", "ascii")]);
  hex.fill(0);
  const dir = dirname(file);
  const tmp = join(dir, `.${basename(file)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
  try {
    const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      let off = 0;
      while (off < body.length) off += writeSync(fd, body, off, body.length - off);
      if (o.owner && process.getuid?.() === 0) fchownSync(fd, o.owner.uid, o.owner.gid);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    if (o.exclusive) {
      // rename(2) would replace an existing file; open O_EXCL semantics via a hard link instead.
      linkSync(tmp, file);
      rmSync(tmp, { force: true });
    } else {
      renameSync(tmp, file);
    }
    fsyncDir(dir);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  } finally {
    body.fill(0);
  }
}

/**
 * Creates a new sealing state at `file` (epoch 0, key K0 = 32 random bytes, mode 0600, never over an
 * existing file) and returns K0: the verification key the auditor must keep offline.
 * @throws SealStateError if `file` exists; Node errors for an unwritable folder.
 */
export function createSealState(file: string): Buffer {
  const k0 = randomBytes(SEAL_KEY_BYTES);
  try {
    writeSealState(file, 0, k0, { exclusive: true });
  } catch (err) {
    k0.fill(0);
    if ((err as NodeJS.ErrnoException).code === "EEXIST")
      throw new SealStateError(`${file} exists; refusing to overwrite a sealing state (its chain could no longer be verified)`);
    throw err;
  }
  return k0;
}

/** Seals chain heads with the ratcheting key kept in a state file. */
export interface Sealer {
  /** Seals the head if it moved since the newest seal (one seal row, one ratchet); the stored row or undefined. */
  sealHead(): SealRow | undefined;
  /** The step for `AuditStore.prune(beforeMs, sealer.step)` (seals the prune checkpoint). */
  readonly step: SealStep;
}

/**
 * A sealer over `stateFile` for `node`. The key is read from the file for each seal and zeroed right
 * after; the file is replaced atomically with the next key before the seal row commits (a crash in
 * between leaves a gap in the epochs, never a key on disk that made a stored seal).
 * Each step runs inside the store's write transaction, so a CLI prune and the gateway never use one key twice.
 * @throws SealStateError at creation if the state file is missing, unsafe or malformed (checked once, up front).
 */
export function createSealer(stateFile: string, node: string, store: { sealHead(step: SealStep): SealRow | undefined }): Sealer {
  if (!/^[A-Za-z0-9._-]{1,253}$/.test(node)) throw new SealStateError(`gateway.node: "${node}" is not a host name`);
  readSealState(stateFile).key.fill(0);
  const step: SealStep = ({ kind, eventId, hash }) => {
    const st = readSealState(stateFile);
    let seal: string;
    let next: Buffer;
    try {
      const message = kind === "checkpoint" ? checkpointSealMessage : sealMessage;
      seal = computeSeal(st.key, message(node, eventId, hash, st.epoch));
      next = ratchetKey(st.key);
    } finally {
      st.key.fill(0);
    }
    try {
      writeSealState(stateFile, st.epoch + 1, next, { owner: st });
    } finally {
      next.fill(0);
    }
    return { epoch: st.epoch, node, seal };
  };
  return { step, sealHead: () => store.sealHead(step) };
}

interface SealDbRow {
  kind: string;
  event_id: number;
  epoch: number;
  hash: string;
  node: string;
  seal: string;
}

/** Most epochs a verifier ratchets past the number of seal rows (bounds the work an edited epoch can cause). */
const MAX_EPOCH_SLACK = 100_000;

function sealsEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, "utf8");
  const y = Buffer.from(b, "utf8");
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Checks the `seals` table of an audit database with the auditor's verification key K0:
 * - every seal verifies with K_epoch (a seal forged or re-made with a later key does not);
 * - epochs run 0, 1, 2… without gaps or repeats (a deleted seal row, or a state file restored from a copy);
 * - each sealed event still exists with the sealed hash, unless a prune checkpoint covers it;
 * - every prune checkpoint (pruned_through_id, last_hash) carries a valid checkpoint seal (a head seal
 *   of the same event does not count: a root deleting history up to a sealed head is caught).
 * Returns every problem found (empty = all good). Issues never contain the expected seal value
 * (printing it would hand a forger a valid seal). Does not check the hash chain itself (verify does).
 * @throws RangeError if `k0` is not 32 bytes.
 */
export function checkSeals(db: Database.Database, k0: Buffer): VerifyIssue[] {
  if (k0.length !== SEAL_KEY_BYTES) throw new RangeError(`the verification key must be ${SEAL_KEY_BYTES} bytes`);
  const issues: VerifyIssue[] = [];
  const table = (name: string) => db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined;
  if (!table("seals") || !table("events"))
    return [{ kind: "seal", id: "-", reason: "the database has no seals table (was gateway.audit_seal_state set?)" }];
  const rows = db.prepare("SELECT kind, event_id, epoch, hash, node, seal FROM seals ORDER BY epoch, rowid").all() as SealDbRow[];
  const checkpoints = table("checkpoints")
    ? (db.prepare("SELECT id, pruned_through_id, last_hash FROM checkpoints ORDER BY id").all() as Array<{
        id: number;
        pruned_through_id: number;
        last_hash: string;
      }>)
    : [];
  if (rows.length === 0) issues.push({ kind: "seal", id: "-", reason: "no seal in the database (was gateway.audit_seal_state set?)" });
  const minEventId = (db.prepare("SELECT MIN(id) AS id FROM events").get() as { id: number | null }).id;
  const eventHash = db.prepare("SELECT hash FROM events WHERE id = ?");
  const maxEpoch = rows.length + MAX_EPOCH_SLACK;
  const sealedCheckpoints = new Set<string>();
  let key: Buffer = Buffer.from(k0);
  let keyEpoch = 0;
  let expect = 0;
  try {
    for (const r of rows) {
      const id = `epoch ${String(r.epoch)} (event ${String(r.event_id)})`;
      if (!Number.isSafeInteger(r.epoch) || r.epoch < 0 || r.epoch > maxEpoch || !Number.isSafeInteger(r.event_id)) {
        issues.push({ kind: "seal", id, reason: "the seal row's epoch or event id is not a plausible integer (row edited)" });
        continue;
      }
      if (r.epoch < expect) {
        issues.push({
          kind: "seal",
          id,
          reason: "a second seal with this epoch: a key was used twice (state file restored from a copy, or a forged row)",
        });
      } else if (r.epoch > expect) {
        issues.push({
          kind: "seal",
          id,
          expected: `epoch ${expect}`,
          found: `epoch ${r.epoch}`,
          reason: `no seal for epoch${r.epoch - expect > 1 ? `s ${expect}..${r.epoch - 1}` : ` ${expect}`} (seal rows deleted, or the gateway stopped between ratchet and commit)`,
        });
      }
      expect = r.epoch + 1;
      while (keyEpoch < r.epoch) {
        const next = ratchetKey(key);
        key.fill(0);
        key = next;
        keyEpoch += 1;
      }
      const message = r.kind === "head" ? sealMessage : r.kind === "checkpoint" ? checkpointSealMessage : undefined;
      const good =
        message !== undefined &&
        typeof r.seal === "string" &&
        typeof r.hash === "string" &&
        typeof r.node === "string" &&
        sealsEqual(r.seal, computeSeal(key, message(r.node, r.event_id, r.hash, r.epoch)));
      if (!good) {
        issues.push({
          kind: "seal",
          id,
          reason: "the seal does not verify with the key of its epoch (forged, edited, or re-made with a later key)",
        });
        continue;
      }
      if (r.kind === "checkpoint") sealedCheckpoints.add(`${r.event_id}:${r.hash}`);
      const ev = eventHash.get(r.event_id) as { hash: string } | undefined;
      if (ev) {
        if (ev.hash !== r.hash)
          issues.push({
            kind: "seal",
            id,
            expected: r.hash,
            found: ev.hash,
            reason: "the sealed event's hash changed (the chain was rewritten after sealing)",
          });
        continue;
      }
      const pruned = (minEventId === null || r.event_id < minEventId) && checkpoints.some((c) => c.pruned_through_id >= r.event_id);
      if (!pruned)
        issues.push({
          kind: "seal",
          id,
          expected: r.hash,
          reason: "the sealed event is missing (the chain was truncated or rows deleted)",
        });
    }
  } finally {
    key.fill(0);
  }
  for (const c of checkpoints) {
    if (!sealedCheckpoints.has(`${c.pruned_through_id}:${c.last_hash}`))
      issues.push({
        kind: "checkpoint",
        id: String(c.id),
        reason: "the prune checkpoint has no valid seal (forged, or pruned without the sealing state)",
      });
  }
  return issues;
}
