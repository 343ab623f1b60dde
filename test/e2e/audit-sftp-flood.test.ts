/**
 * Issue 12: a hostile SFTP client flooding OPEN requests against a silent target must not grow the
 * gateway's memory without bound. The SFTP observer (src/audit/transfers.ts) keeps at most a fixed
 * number of unanswered requests per channel and reports one `transfer_unparsed` (reason `overflow`).
 *
 * The silent target is an ssh2 server on 127.0.0.1 that accepts the `sftp` subsystem as a raw
 * channel, answers INIT with VERSION (draft-ietf-secsh-filexfer-02 §4: SSH_FXP_VERSION = 2) and then
 * reads everything and answers nothing. The client speaks raw SFTP over an ssh2 channel.
 */
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { execa } from "execa";
import ssh2 from "ssh2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateEd25519, PASSWORD_PROMPT } from "../../src/ssh/index.ts";
import { type Harness, ssh2LoginAt, startHarness, TEST_ROUTES } from "../helpers/harness.ts";
import { processAlive } from "../helpers/process.ts";

const MiB = 1024 * 1024;
/**
 * 200 000 OPENs (24 MB): without the observer's cap the gateway retains ~0.5 KiB per unanswered
 * request (+103 MiB VmRSS measured, fatal with the 64 MiB old space below); 20 000 would retain only
 * ~5 MiB, too little for VmRSS to tell a bounded parser from an unbounded one.
 */
const OPENS = 200_000;
const WARMUP = 500;
const MAX_GROWTH = 40 * MiB;

interface SilentTarget {
  readonly port: number;
  readonly hostKeyLine: string;
  /** Bytes received on sftp channels (INIT included). */
  received(): number;
  close(): void;
}

/** An ssh2 server accepting any client, answering SFTP INIT with VERSION 3 and nothing else ever. */
async function startSilentTarget(): Promise<SilentTarget> {
  const pair = generateEd25519("silent-target");
  let received = 0;
  const clients = new Set<ssh2.Connection>();
  const server = new ssh2.Server({ hostKeys: [pair.private] }, (client) => {
    clients.add(client);
    client.on("close", () => clients.delete(client));
    client.on("authentication", (ctx) => ctx.accept());
    client.on("session", (accept) => {
      const s = accept();
      // Only a `subsystem` listener: ssh2 then hands over a raw channel (no built-in SFTP server).
      s.on("subsystem", (acc, rej, info) => {
        if (info.name !== "sftp") return rej();
        const ch = acc();
        let versionSent = false;
        ch.on("data", (d: Buffer) => {
          received += d.length;
          if (!versionSent) {
            versionSent = true;
            // uint32 length 5, byte SSH_FXP_VERSION (2), uint32 version 3
            ch.write(Buffer.from([0, 0, 0, 5, 2, 0, 0, 0, 3]));
          }
        });
      });
    });
    client.on("error", () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    hostKeyLine: pair.public.split(" ").slice(0, 2).join(" "),
    received: () => received,
    close: () => {
      for (const c of clients) c.end();
      server.close();
    },
  };
}

/** SSH_FXP_OPEN (3): uint32 id, string filename, uint32 pflags, ATTRS (flags 0). */
function openPacket(id: number, path: string): Buffer {
  const name = Buffer.from(path);
  const body = Buffer.alloc(1 + 4 + 4 + name.length + 4 + 4);
  let o = body.writeUInt8(3, 0);
  o = body.writeUInt32BE(id, o);
  o = body.writeUInt32BE(name.length, o);
  o += name.copy(body, o);
  o = body.writeUInt32BE(0x1a, o); // WRITE|CREAT|TRUNC
  body.writeUInt32BE(0, o);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

/** VmRSS of `pid` in bytes (proc(5)). */
function rss(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let h: Harness;
let silent: SilentTarget;

beforeAll(async () => {
  silent = await startSilentTarget();
  h = await startHarness({
    extraUsers: ["f01", "f02", "f03"],
    extraRoutes: `${TEST_ROUTES}
  - groups: [testers]
    alias: silent
    target: silent
    record: { on_unparsed: continue }
  - groups: [testers]
    alias: silentterm
    target: silent
`,
    // A 1 MiB young generation (the default grows to 3 x 16 MiB) and a 64 MiB old space, so that
    // V8 collects the flood's garbage early and VmRSS measures what the gateway retains; a gateway
    // that retained every request would die of "heap out of memory" mid-flood.
    gatewayEnv: { NODE_OPTIONS: "--max-semi-space-size=1 --max-old-space-size=64" },
    extraTargets: { silent },
  });
}, 120_000);

afterAll(async () => {
  await h?.stop();
  silent?.close();
});

const sql = async (q: string) => String((await execa("sqlite3", [join(h.dir, "state/audit.db"), q])).stdout).trim();

async function login(uid: string, alias: string) {
  return ssh2LoginAt(h.port, `${uid}_${alias}`, (prompt) => (prompt === PASSWORD_PROMPT ? `${uid}-pw` : h.nextCode(uid)));
}

function openSftp(c: InstanceType<typeof ssh2.Client>): Promise<ssh2.ClientChannel> {
  return new Promise((resolve, reject) => c.subsys("sftp", (err, ch) => (err ? reject(err) : resolve(ch))));
}

/** Writes INIT and waits for VERSION (draft-ietf-secsh-filexfer-02 §4); resolves with the bytes written. */
async function init(ch: ssh2.ClientChannel): Promise<number> {
  const version = new Promise<Buffer>((resolve) => ch.once("data", (d: Buffer) => resolve(d)));
  const packet = Buffer.from([0, 0, 0, 5, 1, 0, 0, 0, 3]);
  ch.write(packet);
  expect((await version).readUInt8(4)).toBe(2);
  return packet.length;
}

/**
 * Writes OPENs with ids `from+1 … from+n` and distinct 100-byte paths (121-byte packets), honouring
 * backpressure; stops early when the channel closes. Resolves with the bytes written.
 */
async function flood(ch: ssh2.ClientChannel, from: number, n: number): Promise<number> {
  let bytes = 0;
  let closed = false;
  ch.once("close", () => {
    closed = true;
  });
  for (let i = from; i < from + n && !closed; i += 500) {
    const batch: Buffer[] = [];
    for (let j = i; j < Math.min(from + n, i + 500); j++)
      batch.push(openPacket(j + 1, `/srv/flood/${"p".repeat(76)}-${String(j).padStart(8, "0")}.bin`));
    const buf = Buffer.concat(batch);
    bytes += buf.length;
    if (!ch.write(buf)) await new Promise<void>((r) => (closed ? r() : ch.once("drain", () => r()).once("close", () => r())));
  }
  return bytes;
}

/** Waits (bounded, 60 s) until the silent target has received `bytes` bytes in total, the gateway `pid` alive. */
async function targetReceived(bytes: number, pid: number): Promise<void> {
  for (let i = 0; i < 600 && silent.received() < bytes && processAlive(pid); i++) await sleep(100);
  expect(processAlive(pid), `the gateway died:\n${h.gatewayOutput().slice(-2000)}`).toBe(true);
  expect(silent.received()).toBe(bytes);
}

async function unparsedOf(uid: string): Promise<Array<{ reason: string; dropped?: number }>> {
  const rows = await sql(`SELECT data FROM events WHERE type = 'transfer_unparsed' AND uid = '${uid}' ORDER BY id`);
  return rows
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { reason: string; dropped?: number });
}

async function waitClosed(uid: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((await sql(`SELECT count(*) FROM sessions WHERE uid = '${uid}' AND result = 'open'`)) === "0") return;
    await sleep(100);
  }
  throw new Error(`a session of ${uid} stayed open`);
}

describe("SFTP OPEN flood against a silent target", () => {
  it("relays 200 000 unanswered OPENs with bounded gateway memory and one overflow event", async () => {
    const pid = h.gatewayPid();
    if (!pid) throw new Error("no gateway pid");
    const c = await login("f01", "silent");
    try {
      const ch = await openSftp(c);
      // Warm-up below the observer's cap (1000 unanswered requests), so that buffers, JIT and the
      // audit path are already paid for when `before` is read.
      let sent = silent.received() + (await init(ch)) + (await flood(ch, 0, WARMUP));
      await targetReceived(sent, pid);
      await sleep(500);
      const before = rss(pid);
      sent += await flood(ch, WARMUP, OPENS / 2);
      await targetReceived(sent, pid);
      await sleep(500);
      const mid = rss(pid);
      sent += await flood(ch, WARMUP + OPENS / 2, OPENS / 2);
      // Every byte reached the target: the gateway parsed (and relayed) the whole flood.
      await targetReceived(sent, pid);
      await sleep(500);
      const after = rss(pid);
      const growth = after - before;
      console.log(
        `sftp flood: ${OPENS} OPENs after ${WARMUP}; gateway VmRSS before ${(before / MiB).toFixed(1)} MiB, half-way ${(mid / MiB).toFixed(1)} MiB, after ${(after / MiB).toFixed(1)} MiB, growth ${(growth / MiB).toFixed(1)} MiB`,
      );
      expect(growth).toBeLessThan(MAX_GROWTH);
      ch.close();
    } finally {
      c.end();
    }
    await waitClosed("f01");
    const ev = await unparsedOf("f01");
    expect(ev).toHaveLength(1);
    expect(ev[0]).toMatchObject({ reason: "overflow" });
    // The requests beyond the cap were dropped from the observer, oldest first.
    expect(ev[0]?.dropped).toBeGreaterThan(0);
    expect(ev[0]?.dropped).toBeLessThan(OPENS);
    // The gateway still serves a normal login.
    const r = await h.ssh("f02_vm1", ["echo", "still-serving"]);
    expect(r.stdout).toBe("still-serving\n");
  }, 180_000);

  it("with the default on_unparsed (terminate) the flooding channel is closed after the cap", async () => {
    const c = await login("f03", "silentterm");
    try {
      const ch = await openSftp(c);
      const closed = new Promise<void>((r) => ch.once("close", () => r()));
      const startReceived = silent.received();
      await init(ch);
      await flood(ch, 0, OPENS);
      await Promise.race([closed, sleep(30_000).then(() => Promise.reject(new Error("the flooding channel stayed open")))]);
      // The target never got the whole flood: the gateway stopped relaying at the overflow.
      // (INIT 9 bytes + 121 bytes per OPEN with a 100-byte path)
      expect(silent.received() - startReceived).toBeLessThan(9 + OPENS * 121);
    } finally {
      c.end();
    }
    await waitClosed("f03");
    const ev = await unparsedOf("f03");
    expect(ev).toHaveLength(1);
    expect(ev[0]).toMatchObject({ reason: "overflow" });
  }, 120_000);
});
