/**
 * The remote syslog stream: RFC 5424 formatting and SD-PARAM escaping, octet-counting framing,
 * the bounded queue (drop oldest, report the count), reconnect, and the store's onCommitted hook.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer as createTlsServer, type Server as TlsServer } from "node:tls";
import { execa } from "execa";
import { afterEach, describe, expect, it } from "vitest";
import { type AuditEvent, openAuditStore } from "../../src/audit/store.ts";
import {
  anchorMessage,
  createSyslogSink,
  escapeSdValue,
  eventMessage,
  formatSyslog,
  frameOctetCounting,
  parseSyslogUrl,
} from "../../src/audit/syslog.ts";
import { policySchema } from "../../src/policy/schema.ts";

const EVENT: AuditEvent = {
  id: 7,
  ts: "2026-11-28T10:00:00.123Z",
  type: "login",
  uid: "mario.rossi",
  account: "mario.rossi_vm1",
  source: "10.0.0.1",
  result: "ok",
  data: { note: 'a "quoted" ] \\ value' },
  prevHash: "a".repeat(64),
  hash: "b".repeat(64),
};

/** Splits an octet-counted stream into messages; throws on a malformed frame. */
function unframe(buf: Buffer): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < buf.length) {
    const sp = buf.indexOf(0x20, i);
    const len = Number(buf.subarray(i, sp).toString("ascii"));
    if (!Number.isInteger(len) || len <= 0) throw new Error(`bad frame at ${i}`);
    out.push(buf.subarray(sp + 1, sp + 1 + len).toString("utf8"));
    i = sp + 1 + len;
  }
  return out;
}

describe("RFC 5424 formatting", () => {
  it("formats an event: PRI authpriv.info, version 1, MSGID = type, SD with node/event_id/hash, JSON body", () => {
    const m = formatSyslog(eventMessage(EVENT, "gw1", "varco", "42"));
    expect(
      m.startsWith(`<86>1 2026-11-28T10:00:00.123Z gw1 varco 42 login [varco@32473 node="gw1" event_id="7" hash="${"b".repeat(64)}"] {`),
    ).toBe(true);
    const json = JSON.parse(m.slice(m.indexOf("] ") + 2)) as AuditEvent;
    expect(json).toEqual(EVENT);
  });

  it("formats an anchor with severity notice (PRI 85) and MSGID anchor", () => {
    const a = { node: "gw1", event_id: 9, hash: "c".repeat(64), epoch: 3, seal: "d".repeat(64) };
    const m = formatSyslog(anchorMessage(a, "varco", "1", new Date("2026-01-01T00:00:00Z")));
    expect(m).toBe(
      `<85>1 2026-01-01T00:00:00.000Z gw1 varco 1 anchor [varco@32473 node="gw1" event_id="9" hash="${a.hash}" epoch="3" seal="${a.seal}"] ${JSON.stringify({ anchor: a })}`,
    );
  });

  it('escapes ", \\ and ] in SD-PARAM values (RFC 5424 §6.3.3) so a value cannot close the element', () => {
    expect(escapeSdValue('a"b\\c]d')).toBe('a\\"b\\\\c\\]d');
    const hostile = 'x"] [evil@1 a="b';
    const m = formatSyslog({
      severity: 6,
      timestamp: "2026-01-01T00:00:00.000Z",
      hostname: "h",
      appName: "varco",
      procId: "1",
      msgId: "login",
      params: [["node", hostile]],
      msg: "{}",
    });
    expect(m).toContain('[varco@32473 node="x\\"\\] [evil@1 a=\\"b"] {}');
    // Exactly one unescaped ']' closes the SD: the SD is one element.
    const sd = m.slice(m.indexOf("["));
    const closers = [...sd.matchAll(/(?<!\\)\]/g)];
    expect(closers[0]?.index).toBe(sd.indexOf("] {}"));
  });

  it("header fields cannot carry spaces or control characters (a forged field split)", () => {
    const m = formatSyslog({
      severity: 6,
      timestamp: "t",
      hostname: "gw 1\nx",
      appName: "",
      procId: "1",
      msgId: "a b",
      params: [],
      msg: "m",
    });
    expect(m).toBe("<86>1 t gw_1_x - 1 a_b [varco@32473] m");
  });

  it("frames by octet count in bytes, not characters (RFC 6587 §3.4.1)", () => {
    const f = frameOctetCounting("é\n€");
    expect(f.toString("utf8")).toBe("6 é\n€");
    expect(unframe(Buffer.concat([f, frameOctetCounting("x")]))).toEqual(["é\n€", "x"]);
  });

  it("parses tcp:// and tls:// URLs and refuses others", () => {
    expect(parseSyslogUrl("tcp://127.0.0.1:514")).toEqual({ protocol: "tcp", host: "127.0.0.1", port: 514 });
    expect(parseSyslogUrl("tls://[::1]:6514")).toEqual({ protocol: "tls", host: "::1", port: 6514 });
    expect(parseSyslogUrl("tls://logs.example.org:6514").host).toBe("logs.example.org");
    for (const bad of [
      "udp://h:514",
      "tcp://h",
      "tcp://h:0",
      "tcp://h:70000",
      "tcp://h:514/x",
      "tcp://[nothex]:1",
      "tcp://a b:1",
      " tcp://h:1",
    ])
      expect(() => parseSyslogUrl(bad), bad).toThrow();
  });

  it("the policy schema validates gateway.audit_syslog", () => {
    const gw = (audit_syslog: unknown) => policySchema.shape.gateway.safeParse({ audit_syslog });
    expect(gw({ url: "tcp://127.0.0.1:514" }).success).toBe(true);
    expect(gw({ url: "tls://logs:6514", ca_file: "ca.pem" }).success).toBe(true);
    expect(gw({ url: "tcp://logs:514", ca_file: "ca.pem" }).success).toBe(false);
    expect(gw({ url: "udp://logs:514" }).success).toBe(false);
    expect(gw({ url: "tcp://logs:514", app_name: "has space" }).success).toBe(false);
    expect(gw({ url: "tcp://logs:514", extra: 1 }).success).toBe(false);
  });
});

describe("syslog sink", () => {
  let server: Server | undefined;
  const sockets: Socket[] = [];
  afterEach(async () => {
    for (const s of sockets) s.destroy();
    sockets.length = 0;
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = undefined;
  });

  /** A TCP receiver on a free loopback port collecting raw bytes. */
  async function receiver(): Promise<{ port: number; bytes: () => Buffer }> {
    const chunks: Buffer[] = [];
    server = createServer((s) => {
      sockets.push(s);
      s.on("data", (d) => chunks.push(d));
    });
    await new Promise<void>((r) => server?.listen(0, "127.0.0.1", r));
    const addr = server.address();
    if (!addr || typeof addr === "string") throw new Error("no port");
    return { port: addr.port, bytes: () => Buffer.concat(chunks) };
  }
  async function until(cond: () => boolean, what: string): Promise<void> {
    for (let i = 0; i < 100; i++) {
      if (cond()) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`timed out: ${what}`);
  }

  it("delivers events in order and, while the receiver is down, keeps the newest queueLimit and reports the drops", async () => {
    // Nothing listens yet: find a free port, then close it.
    const probe = await receiver();
    const port = probe.port;
    await new Promise<void>((r) => server?.close(() => r()));
    server = undefined;
    const warnings: string[] = [];
    const sink = createSyslogSink({
      url: `tcp://127.0.0.1:${port}`,
      node: "gw1",
      queueLimit: 5,
      minBackoffMs: 20,
      maxBackoffMs: 50,
      logger: { info: () => undefined, warn: (_o, m) => warnings.push(m) },
    });
    for (let i = 1; i <= 12; i++) expect(() => sink.event({ ...EVENT, id: i })).not.toThrow();
    expect(sink.stats()).toMatchObject({ queued: 5, dropped: 7, connected: false });
    // The receiver comes up on that port: the sink reconnects and sends the drop report, then 8..12.
    const chunks: Buffer[] = [];
    server = createServer((s) => {
      sockets.push(s);
      s.on("data", (d) => chunks.push(d));
    });
    await new Promise<void>((r) => server?.listen(port, "127.0.0.1", r));
    await until(() => unframe(Buffer.concat(chunks)).length >= 6, "6 messages");
    const msgs = unframe(Buffer.concat(chunks));
    expect(msgs[0]).toMatch(/^<84>1 \S+ gw1 varco \d+ dropped \[varco@32473 node="gw1" dropped="7"\] /);
    expect(msgs.slice(1).map((m) => /event_id="(\d+)"/.exec(m)?.[1])).toEqual(["8", "9", "10", "11", "12"]);
    expect(warnings.some((w) => w.includes("dropped"))).toBe(true);
    await sink.close();
  });

  it("close() sends what is queued; event() after close neither throws nor sends", async () => {
    const r = await receiver();
    const sink = createSyslogSink({ url: `tcp://127.0.0.1:${r.port}`, node: "gw1" });
    for (let i = 1; i <= 100; i++) sink.event({ ...EVENT, id: i });
    await sink.close();
    await until(() => unframe(r.bytes()).length === 100, "100 messages");
    expect(() => sink.event(EVENT)).not.toThrow();
    expect(sink.stats().queued).toBe(0);
  });

  it("rate: formats and sends 20 000 events (measured, printed)", async () => {
    const r = await receiver();
    const sink = createSyslogSink({ url: `tcp://127.0.0.1:${r.port}`, node: "gw1", queueLimit: 50_000 });
    await until(() => sink.stats().connected, "connected");
    const t0 = performance.now();
    for (let i = 1; i <= 20_000; i++) sink.event({ ...EVENT, id: i });
    await until(() => r.bytes().length > 0 && unframe(r.bytes()).length === 20_000, "20 000 messages");
    const ms = performance.now() - t0;
    console.log(`syslog sink: 20000 events in ${ms.toFixed(0)} ms = ${Math.round(20_000 / (ms / 1000))} msg/s (loopback TCP)`);
    expect(sink.stats().dropped).toBe(0);
    await sink.close();
  });
});

describe("syslog over TLS (RFC 5425)", () => {
  it("delivers to a receiver whose certificate the CA file signs for the URL's host name, and to no other", async () => {
    const dir = mkdtempSync(join(tmpdir(), "varco-syslog-tls-"));
    const servers: TlsServer[] = [];
    try {
      const key = join(dir, "key.pem");
      const cert = join(dir, "cert.pem");
      await execa("openssl", [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "1",
        "-subj",
        "/CN=syslog.test",
        "-addext",
        "subjectAltName=DNS:localhost",
      ]);
      const chunks: Buffer[] = [];
      const server = createTlsServer({ key: readFileSync(key), cert: readFileSync(cert) }, (s) =>
        s.on("data", (d: Buffer) => chunks.push(d)),
      );
      servers.push(server);
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      const port = (server.address() as { port: number }).port;
      const good = createSyslogSink({ url: `tls://localhost:${port}`, caFile: cert, node: "gw1" });
      good.event(EVENT);
      await good.close();
      for (let i = 0; i < 50 && chunks.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect(unframe(Buffer.concat(chunks))).toHaveLength(1);
      expect(unframe(Buffer.concat(chunks))[0]).toContain(`hash="${EVENT.hash}"`);
      // Without the CA (system CAs only), and by IP (the certificate names only localhost): nothing is sent.
      const warnings: string[] = [];
      const log = { info: () => undefined, warn: (o: object) => warnings.push(JSON.stringify(o)) };
      for (const url of [`tls://localhost:${port}`, `tls://127.0.0.1:${port}`]) {
        const bad = createSyslogSink({ url, caFile: url.includes("127") ? cert : undefined, node: "gw1", logger: log, minBackoffMs: 1000 });
        bad.event(EVENT);
        await bad.close(500);
        expect(bad.stats().connected).toBe(false);
      }
      expect(unframe(Buffer.concat(chunks))).toHaveLength(1);
      expect(warnings.join("\n")).toMatch(/self.signed|certificate|altnames/i);
    } finally {
      for (const s of servers) s.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 20_000);
});

describe("store onCommitted", () => {
  it("hands every committed event (batched and not) in id order, with the stored hash chain; a throwing observer does not fail the append", async () => {
    const dir = mkdtempSync(join(tmpdir(), "varco-syslog-unit-"));
    try {
      const seen: AuditEvent[] = [];
      let calls = 0;
      const store = openAuditStore(join(dir, "audit.db"), undefined, {
        onCommitted: (events) => {
          calls += 1;
          seen.push(...events);
          if (calls === 1) throw new Error("observer failure");
        },
      });
      store.append({ type: "login", uid: "u1", data: { x: 1 } });
      store.append({ type: "file", uid: "u1", data: { path: "/a" } });
      store.append({ type: "file", uid: "u1", data: { path: "/b" } });
      await new Promise((r) => setTimeout(r, 50));
      store.append({ type: "exec", uid: "u1" });
      const stored = store.allEvents();
      expect(seen.map((e) => e.id)).toEqual([1, 2, 3, 4]);
      expect(seen.map((e) => e.type)).toEqual(["login", "file", "file", "exec"]);
      expect(seen.map((e) => e.hash)).toEqual([...stored].sort((a, b) => a.id - b.id).map((e) => e.hash));
      expect(seen[1]?.prevHash).toBe(seen[0]?.hash);
      expect(seen[2]?.data).toEqual({ path: "/b" });
      store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
