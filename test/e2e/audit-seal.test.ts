/**
 * Forward-secure sealing end to end: `varco audit keygen` prints the verification key once, a gateway
 * with gateway.audit_seal_state logs "audit anchor" lines whose seals verify with the ratcheted keys,
 * and `varco audit verify --seal-key` passes on an untouched database and fails once a root rewrote a
 * sealed event and recomputed the whole hash chain (which `audit verify` alone cannot see).
 */
import { createHmac } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { deriveEpochKey, hashEvent, sealMessage } from "../../src/audit/index.ts";
import { type Harness, ROOT, startHarness } from "../helpers/harness.ts";

let h: Harness;
let dir: string;
let k0hex = "";
let keygenOut = "";

const varco = (args: readonly string[], input?: string) =>
  execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, ...args], {
    reject: false,
    ...(input !== undefined ? { input } : {}),
  });

interface Anchor {
  node: string;
  event_id: number;
  hash: string;
  epoch: number;
  seal: string;
}
const anchors = (): Anchor[] =>
  h
    .gatewayOutput()
    .split("\n")
    .flatMap((l) => {
      try {
        const j = JSON.parse(l) as { msg?: string; anchor?: Anchor };
        return j.msg === "audit anchor" && j.anchor ? [j.anchor] : [];
      } catch {
        return [];
      }
    });
async function waitAnchors(n: number): Promise<Anchor[]> {
  for (let i = 0; i < 100; i++) {
    const a = anchors();
    if (a.length >= n) return a;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`fewer than ${n} audit anchor lines in 10 s`);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "varco-seal-e2e-"));
  const kg = await execa("node", [join(ROOT, "bin/varco.mjs"), "audit", "keygen", "--out", join(dir, "seal.state")], { reject: false });
  keygenOut = String(kg.stdout);
  expect(kg.exitCode).toBe(0);
  k0hex = /^[0-9a-f]{64}$/m.exec(keygenOut)?.[0] ?? "";
  writeFileSync(join(dir, "k0.hex"), `${k0hex}\n`, { mode: 0o600 });
  h = await startHarness({
    dir,
    extraUsers: ["s01", "s02"],
    templateEdit: (t) =>
      t.replace(
        "  state_dir: state\n",
        "  state_dir: state\n  audit_seal_state: seal.state\n  node: gw-e2e\n  audit_checkpoint_interval: 1s\n",
      ),
  });
});

afterAll(async () => {
  await h?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("forward-secure sealing", () => {
  it("keygen prints the verification key once with the offline advice, writes a 0600 state and refuses to overwrite it", async () => {
    expect(k0hex).toMatch(/^[0-9a-f]{64}$/);
    expect(keygenOut).toMatch(/OFFLINE/);
    expect(statSync(join(dir, "seal.state")).mode & 0o777).toBe(0o600);
    const again = await execa("node", [join(ROOT, "bin/varco.mjs"), "audit", "keygen", "--out", join(dir, "seal.state")], {
      reject: false,
    });
    expect(again.exitCode).toBe(1);
    expect(String(again.stdout)).not.toMatch(/[0-9a-f]{64}/);
  });

  it("logs an anchor per seal; each seal verifies with the key of its epoch and the state moved past it", async () => {
    const r = await h.ssh("s01_vm1", ["echo", "sealed-session"]);
    expect(r.stdout).toContain("sealed-session");
    const list = await waitAnchors(1);
    const k0 = Buffer.from(k0hex, "hex");
    list.forEach((a, i) => {
      expect(a.node).toBe("gw-e2e");
      expect(a.epoch).toBe(i);
      const expected = createHmac("sha256", deriveEpochKey(k0, a.epoch))
        .update(sealMessage(a.node, a.event_id, a.hash, a.epoch))
        .digest("hex");
      expect(a.seal).toBe(expected);
    });
    const last = list[list.length - 1] as Anchor;
    const state = readFileSync(join(dir, "seal.state"), "utf8");
    expect(state).toMatch(/^epoch (\d+)$/m);
    expect(Number(/^epoch (\d+)$/m.exec(state)?.[1])).toBeGreaterThan(last.epoch);
    expect(state).not.toContain(k0hex);
  });

  it("audit verify --seal-key passes on the untouched database (from a file and from stdin) and refuses a wrong key", async () => {
    const ok = await varco(["audit", "verify", "--seal-key", join(dir, "k0.hex")]);
    expect(ok.stderr).toBe("");
    expect(ok.exitCode).toBe(0);
    const stdin = await varco(["audit", "verify", "--seal-key", "-"], `${k0hex}\n`);
    expect(stdin.exitCode).toBe(0);
    const wrong = await varco(["audit", "verify", "--seal-key", "-"], `${"00".repeat(32)}\n`);
    expect(wrong.exitCode).toBe(1);
    expect(String(wrong.stderr)).toMatch(/does not verify/);
    const garbage = await varco(["audit", "verify", "--seal-key", "-"], "not-a-key\n");
    expect(garbage.exitCode).toBe(2);
    expect(String(garbage.stderr)).not.toContain("not-a-key");
  });

  it("a sealed event rewritten with the whole chain recomputed passes plain verify but fails --seal-key", async () => {
    await h.ssh("s02_vm1", ["echo", "second"]);
    const db = new Database(join(dir, "state/audit.db"));
    try {
      const target = db.prepare("SELECT id FROM events WHERE type = 'exec' ORDER BY id LIMIT 1").get() as { id: number } | undefined;
      expect(target).toBeDefined();
      // Wait (bounded) until a seal covers that event.
      for (let i = 0; i < 100 && !anchors().some((a) => a.event_id >= (target?.id ?? 0)); i++) await new Promise((r) => setTimeout(r, 100));
      expect(anchors().some((a) => a.event_id >= (target?.id ?? 0))).toBe(true);
      // As a root would with a script: change the command, recompute every hash after it.
      db.transaction(() => {
        let prev: string | undefined;
        for (const r of db.prepare("SELECT * FROM events ORDER BY id").all() as Array<Record<string, string | number | null>>) {
          const data = r.id === target?.id ? JSON.stringify({ ...JSON.parse(String(r.data)), command: "true" }) : String(r.data);
          const prevHash = prev ?? String(r.prev_hash);
          const opt = (k: string) => (r[k] as string | null) ?? undefined;
          const hash = hashEvent({
            id: Number(r.id),
            ts: String(r.ts),
            type: r.type as "exec",
            sessionId: opt("session_id"),
            uid: opt("uid"),
            account: opt("account"),
            target: opt("target"),
            source: opt("source"),
            result: opt("result"),
            data: JSON.parse(data) as Record<string, unknown>,
            prevHash,
          });
          db.prepare("UPDATE events SET data = ?, prev_hash = ?, hash = ? WHERE id = ?").run(data, prevHash, hash, r.id);
          prev = hash;
        }
      }).immediate();
    } finally {
      db.close();
    }
    const plain = await varco(["audit", "verify"]);
    expect(plain.exitCode).toBe(0);
    const sealed = await varco(["audit", "verify", "--seal-key", join(dir, "k0.hex")]);
    expect(sealed.exitCode).toBe(1);
    expect(String(sealed.stderr)).toMatch(/seal epoch \d+ \(event \d+\): the sealed event's hash changed/);
  });
});
