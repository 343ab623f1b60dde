/**
 * The shipper (src/audit/ship.ts) against a real PostgreSQL (test/helpers/postgres.ts): rows arrive
 * in order and byte for byte (the pulled trail verifies with the same code as a local audit.db);
 * a second audit.db claiming the same node is refused without writing anything; PostgreSQL down:
 * events wait in the local audit.db, the spool bound turns health off, and everything arrives in
 * order once it is back.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openAuditStore } from "../../src/audit/index.ts";
import { compareWithLocal, pullTrails } from "../../src/audit/pull.ts";
import { startShipper } from "../../src/audit/ship.ts";
import { verifyAuditDb } from "../../src/audit/verify.ts";
import { type AuditReplica, openAuditReplica, openPostgresState } from "../../src/state/index.ts";
import { havePostgres, startPostgres, type TestPostgres } from "../helpers/postgres.ts";

let pg: TestPostgres;
let replica: AuditReplica;
let dir: string;
const errors: string[] = [];
const log = { info: () => undefined, warn: () => undefined, error: (_o: object, m: string) => void errors.push(m) };

beforeAll(async () => {
  if (!havePostgres) return;
  dir = mkdtempSync(join(tmpdir(), "varco-ship-"));
  pg = await startPostgres();
  await (await openPostgresState(pg.url)).close();
  replica = await openAuditReplica(pg.url, { connectTimeoutMs: 1000 });
}, 60_000);

afterAll(async () => {
  await replica?.close();
  await pg?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Appends `n` events of a session to `file`'s store (committed). */
function appendTo(file: string, n: number, session = "s1") {
  const store = openAuditStore(file);
  store.startSession({ id: session, uid: "mario.rossi", account: "mario.rossi_vm1", target: "vm1", source: "192.0.2.7" });
  for (let i = 0; i < n; i++) store.append({ type: "exec", sessionId: session, uid: "mario.rossi", data: { command: `ls ${i}` } });
  store.close();
}

async function until(what: string, f: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await f()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out: ${what}`);
}

describe.skipIf(!havePostgres)("audit shipping to PostgreSQL", () => {
  it("ships every event in order, byte for byte: the pulled trail verifies and equals the local chain", async () => {
    const file = join(dir, "a.db");
    appendTo(file, 1200);
    const shipper = startShipper({ file, node: "gw-a", replica, log, batch: 500 });
    await until("everything shipped", () => shipper.health().pending === 0 && shipper.health().detail.startsWith("shipped"));
    expect(await shipper.stop(1000)).toBe(0);
    expect((await replica.head("gw-a"))?.id).toBe(1201);
    const pulled = mkdtempSync(join(dir, "pull-"));
    const [trail] = await pullTrails(replica, pulled);
    expect(trail?.node).toBe("gw-a");
    const report = verifyAuditDb(trail?.file as string, { recordingFiles: false });
    expect(report.issues).toEqual([]);
    expect(report.sessions).toBe(1);
    expect(compareWithLocal(file, trail?.file as string)).toEqual({ differences: [], notShipped: 0 });
  }, 60_000);

  it("events deleted in PostgreSQL after shipping are shipped again from the node's audit.db, and said loudly", async () => {
    const file = join(dir, "a.db");
    const shipper = startShipper({ file, node: "gw-a", replica, log, intervalMs: 100 });
    await until("resumed", () => shipper.health().detail.startsWith("shipped"));
    await pg.psql("DELETE FROM audit_events WHERE node = 'gw-a' AND id > 1000");
    appendTo(file, 3, "s5");
    shipper.nudge();
    await until("the tail shipped again", async () => (await replica.head("gw-a"))?.id === 1205 && shipper.health().pending === 0);
    await shipper.stop(1000);
    expect(errors.some((e) => e.includes("missing in PostgreSQL"))).toBe(true);
    const pulled = mkdtempSync(join(dir, "pull-"));
    const trail = (await pullTrails(replica, pulled)).find((t) => t.node === "gw-a");
    expect(verifyAuditDb(trail?.file as string, { recordingFiles: false }).issues).toEqual([]);
    expect(compareWithLocal(file, trail?.file as string)).toEqual({ differences: [], notShipped: 0 });
  }, 60_000);

  it("an idle node notices a tail deleted in PostgreSQL and ships it again", async () => {
    const file = join(dir, "a.db");
    const shipper = startShipper({ file, node: "gw-a", replica, log, intervalMs: 50, recheckMs: 200 });
    await until("resumed", () => shipper.health().detail.startsWith("shipped"));
    const before = errors.length;
    await pg.psql("DELETE FROM audit_events WHERE node = 'gw-a' AND id > 1100");
    await until("the tail shipped again", async () => (await replica.head("gw-a"))?.id === 1205);
    await shipper.stop(1000);
    expect(errors.slice(before).some((e) => e.includes("missing in PostgreSQL"))).toBe(true);
  }, 60_000);

  it("refuses another audit.db that claims the same node (nothing written), and says so", async () => {
    const other = join(dir, "impostor.db");
    appendTo(other, 5, "s2");
    const shipper = startShipper({ file: other, node: "gw-a", replica, log });
    await until("the refusal", () => !shipper.health().ok);
    expect(shipper.health().detail).toContain("not the one that shipped there");
    await shipper.stop(0);
    expect((await replica.head("gw-a"))?.id).toBe(1205);
    expect(errors.some((e) => e.includes("not the one that shipped there"))).toBe(true);
  }, 60_000);

  it("a name with a NUL byte (possible in a refused login's account) ships, and comes back byte for byte", async () => {
    const file = join(dir, "nul.db");
    const store = openAuditStore(file);
    store.append({ type: "login_refused", account: "x\u0000y", source: "192.0.2.9", result: "syntax" });
    store.append({ type: "login_refused", account: "\u0001varco-b64:looks-encoded", source: "192.0.2.9", result: "syntax" });
    store.close();
    appendTo(file, 2, "s6");
    const shipper = startShipper({ file, node: "gw-\u0000nul", replica, log });
    await until("shipped", () => shipper.health().pending === 0 && shipper.health().detail.startsWith("shipped"));
    await shipper.stop(1000);
    const pulled = mkdtempSync(join(dir, "pull-"));
    const trail = (await pullTrails(replica, pulled)).find((t) => t.node === "gw-\u0000nul");
    expect(verifyAuditDb(trail?.file as string, { recordingFiles: false }).issues).toEqual([]);
    expect(compareWithLocal(file, trail?.file as string)).toEqual({ differences: [], notShipped: 0 });
  }, 60_000);

  it("a node pruned before it first shipped: its trail in PostgreSQL starts at the prune checkpoint and verifies", async () => {
    const file = join(dir, "pruned.db");
    const store = openAuditStore(file);
    store.startSession({ id: "s7", uid: "mario.rossi", account: "mario.rossi_vm1", target: "vm1", source: "192.0.2.7" });
    for (let i = 0; i < 10; i++) store.append({ type: "exec", sessionId: "s7", uid: "mario.rossi", data: { command: `ls ${i}` } });
    store.endSession("s7", { result: "ok", upBytes: 1, downBytes: 2, exitStatus: 0 });
    expect(store.prune(Date.now() + 60_000).events).toBeGreaterThan(10);
    store.close();
    appendTo(file, 3, "s8");
    const shipper = startShipper({ file, node: "gw-pruned", replica, log });
    await until("shipped", () => shipper.health().pending === 0 && shipper.health().detail.startsWith("shipped"));
    await shipper.stop(1000);
    const pulled = mkdtempSync(join(dir, "pull-"));
    const trail = (await pullTrails(replica, pulled)).find((t) => t.node === "gw-pruned");
    expect(verifyAuditDb(trail?.file as string, { recordingFiles: false }).issues).toEqual([]);
  }, 60_000);

  it("PostgreSQL stopped in the middle of a batch: the process lives on, and everything arrives once it is back", async () => {
    const file = join(dir, "big.db");
    const store = openAuditStore(file);
    for (let i = 0; i < 60_000; i++) {
      store.append({ type: "file", sessionId: "s9", uid: "u", data: { protocol: "sftp", op: "close", path: `/data/f${i}` } });
      if (i % 5000 === 4999) store.flush();
    }
    store.close();
    const shipper = startShipper({ file, node: "gw-big", replica, log, batch: 2000, intervalMs: 50 });
    await until("shipping under way", async () => ((await replica.head("gw-big").catch(() => undefined))?.id ?? 0) > 0);
    await pg.stop();
    await new Promise((r) => setTimeout(r, 500));
    await pg.start();
    await until("everything shipped", () => shipper.health().pending === 0 && shipper.health().ok);
    await shipper.stop(1000);
    expect((await replica.head("gw-big"))?.id).toBe(60_000);
  }, 120_000);

  it("PostgreSQL down: events wait in audit.db, the spool bound turns health off; back: all arrive in order", async () => {
    const file = join(dir, "b.db");
    appendTo(file, 3, "s3");
    const shipper = startShipper({ file, node: "gw-b", replica, log, spoolLimit: 50, intervalMs: 100 });
    await until("the first events shipped", async () => (await replica.head("gw-b").catch(() => undefined))?.id === 4);
    await pg.stop();
    try {
      appendTo(file, 60, "s4");
      shipper.nudge();
      await until("the spool bound", () => !shipper.health().ok);
      expect(shipper.health().detail).toMatch(/wait to be shipped/);
      expect(shipper.health().pending).toBe(61);
    } finally {
      await pg.start();
    }
    await until("the spool shipped", () => shipper.health().pending === 0 && shipper.health().ok);
    await shipper.stop(1000);
    const pulled = mkdtempSync(join(dir, "pull-"));
    const trail = (await pullTrails(replica, pulled)).find((t) => t.node === "gw-b");
    const report = verifyAuditDb(trail?.file as string, { recordingFiles: false });
    expect(report.issues).toEqual([]);
    expect(report.events).toBe(65);
    expect(compareWithLocal(file, trail?.file as string)).toEqual({ differences: [], notShipped: 0 });
  }, 120_000);
});
