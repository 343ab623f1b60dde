/**
 * Streams the audit trail to a remote syslog receiver as it is written: RFC 5424 messages over TCP
 * with octet-counting framing (RFC 6587 §3.4.1), optionally TLS (RFC 5425). A bounded in-memory
 * queue decouples the gateway from the receiver: nothing here blocks or throws into a caller.
 */
import { readFileSync } from "node:fs";
import { isIP, type Socket, connect as tcpConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import type { SealAnchor } from "./seal.ts";
import type { AuditEvent } from "./store.ts";

/** Private Enterprise Number used in the SD-ID `varco@32473` (32473 is IANA's example PEN, RFC 5612). */
export const SD_ID = "varco@32473";
/** Facility authpriv (10), RFC 5424 §6.2.1 table 1. */
export const FACILITY_AUTHPRIV = 10;
/** Severities, RFC 5424 §6.2.1 table 2. */
export const SEVERITY = { warning: 4, notice: 5, info: 6 } as const;
/** Default queue bound (messages). */
export const SYSLOG_QUEUE_LIMIT = 10_000;

/** A parsed `tcp://host:port` / `tls://host:port`. */
export interface SyslogUrl {
  readonly protocol: "tcp" | "tls";
  readonly host: string;
  readonly port: number;
}

/**
 * Parses a syslog URL (`tcp://host:port`, `tls://host:port`, IPv6 as `[addr]`).
 * @throws Error when it is not such a URL (the policy schema validates it first).
 */
export function parseSyslogUrl(url: string): SyslogUrl {
  const m = /^(tcp|tls):\/\/(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+)):(\d{1,5})$/.exec(url);
  const port = Number(m?.[4]);
  if (!m || !(port >= 1 && port <= 65535) || (m[2] !== undefined && isIP(m[2]) !== 6))
    throw new Error(`not a syslog URL: ${JSON.stringify(url)}`);
  return { protocol: m[1] as "tcp" | "tls", host: (m[2] ?? m[3]) as string, port };
}

/** Escapes an SD-PARAM value: `"`, `\` and `]` get a backslash (RFC 5424 §6.3.3). */
export function escapeSdValue(value: string): string {
  return value.replace(/["\\\]]/g, (c) => `\\${c}`);
}

/**
 * A header field (HOSTNAME, APP-NAME, PROCID, MSGID): printable US-ASCII without spaces (PRINTUSASCII,
 * RFC 5424 §6), at most `max` characters; anything else becomes `_`; empty becomes NILVALUE `-`.
 */
export function headerField(value: string | undefined, max: number): string {
  if (!value) return "-";
  return value.replace(/[^\x21-\x7e]/g, "_").slice(0, max);
}

/** One RFC 5424 message before formatting. `params` become one SD-ELEMENT `[varco@32473 …]` in order. */
export interface SyslogMessage {
  readonly severity: number;
  /** ISO 8601 UTC (as `Date#toISOString` gives; RFC 5424 §6.2.3 allows the millisecond fraction and `Z`). */
  readonly timestamp: string;
  readonly hostname: string;
  readonly appName: string;
  readonly procId: string;
  readonly msgId: string;
  readonly params: ReadonlyArray<readonly [string, string]>;
  /** Free text (UTF-8), here JSON. */
  readonly msg: string;
}

/**
 * Formats an RFC 5424 SYSLOG-MSG: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG` with
 * PRI = facility authpriv × 8 + severity (§6.2.1); header fields sanitised by {@link headerField}
 * (lengths 255/48/128/32, §6), SD-PARAM values escaped by {@link escapeSdValue}.
 */
export function formatSyslog(m: SyslogMessage): string {
  const pri = FACILITY_AUTHPRIV * 8 + m.severity;
  const sd = `[${SD_ID}${m.params.map(([k, v]) => ` ${k}="${escapeSdValue(v)}"`).join("")}]`;
  return `<${pri}>1 ${m.timestamp} ${headerField(m.hostname, 255)} ${headerField(m.appName, 48)} ${headerField(m.procId, 128)} ${headerField(m.msgId, 32)} ${sd} ${m.msg}`;
}

/** Octet-counting frame (RFC 6587 §3.4.1): `MSG-LEN SP SYSLOG-MSG`, MSG-LEN in bytes of UTF-8. */
export function frameOctetCounting(msg: string): Buffer {
  const body = Buffer.from(msg, "utf8");
  return Buffer.concat([Buffer.from(`${body.length} `, "ascii"), body]);
}

/** The syslog message of a committed audit event: MSGID = its type, severity info, the event as JSON. */
export function eventMessage(e: AuditEvent, node: string, appName: string, procId: string): SyslogMessage {
  return {
    severity: SEVERITY.info,
    timestamp: e.ts,
    hostname: node,
    appName,
    procId,
    msgId: e.type,
    params: [
      ["node", node],
      ["event_id", String(e.id)],
      ["hash", e.hash],
    ],
    msg: JSON.stringify(e),
  };
}

/** The syslog message of an anchor (a sealed chain head): MSGID `anchor`, severity notice. */
export function anchorMessage(a: SealAnchor, appName: string, procId: string, now: Date): SyslogMessage {
  return {
    severity: SEVERITY.notice,
    timestamp: now.toISOString(),
    hostname: a.node,
    appName,
    procId,
    msgId: "anchor",
    params: [
      ["node", a.node],
      ["event_id", String(a.event_id)],
      ["hash", a.hash],
      ["epoch", String(a.epoch)],
      ["seal", a.seal],
    ],
    msg: JSON.stringify({ anchor: a }),
  };
}

/** Where the audit trail goes besides the database. */
export interface AuditStreamSink {
  /** Queues a committed event; never throws, never blocks. */
  event(e: AuditEvent): void;
  /** Queues an anchor line; never throws, never blocks. */
  anchor(a: SealAnchor): void;
  /** Sends what is queued for up to `timeoutMs` (default 2000; also waits for a pending connect), then closes; the rest is lost. */
  close(timeoutMs?: number): Promise<void>;
}

/** Counters of a {@link SyslogSink}. */
export interface SyslogStats {
  readonly queued: number;
  /** Messages handed to the socket. */
  readonly sent: number;
  /** Messages dropped because the queue was full (oldest first). */
  readonly dropped: number;
  readonly connected: boolean;
}

export interface SyslogSink extends AuditStreamSink {
  stats(): SyslogStats;
}

/** The subset of a pino logger the sink uses. */
export interface SyslogLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** Options of {@link createSyslogSink}. */
export interface SyslogSinkOptions {
  /** `tcp://host:port` or `tls://host:port`. */
  readonly url: string;
  /** PEM CA bundle for `tls://` (default: Node's bundled CAs). The receiver's name is checked (RFC 5425 §5.2). */
  readonly caFile?: string | undefined;
  readonly appName?: string | undefined;
  /** The node name (HOSTNAME and `node` SD-PARAM). */
  readonly node: string;
  readonly logger?: SyslogLogger | undefined;
  /** Queue bound in messages (default {@link SYSLOG_QUEUE_LIMIT}). */
  readonly queueLimit?: number | undefined;
  /** First reconnect delay in ms (default 200), doubled up to `maxBackoffMs` (default 30 000). */
  readonly minBackoffMs?: number | undefined;
  readonly maxBackoffMs?: number | undefined;
  readonly now?: (() => Date) | undefined;
}

/**
 * Creates the syslog sink and starts connecting. Messages are formatted when queued; the queue
 * holds at most `queueLimit` and drops the oldest on overflow (counted; the count is sent in a
 * `dropped` message, severity warning, and logged). Lost connections are retried with a doubling
 * backoff. A message written to a socket that then breaks may be lost (TCP syslog has no
 * application acknowledgement, RFC 6587 §4). Timers and sockets never keep the process up.
 * @throws Error only for an invalid URL or an unreadable `caFile` (at creation).
 */
export function createSyslogSink(o: SyslogSinkOptions): SyslogSink {
  const target = parseSyslogUrl(o.url);
  const ca = o.caFile ? readFileSync(o.caFile) : undefined;
  const appName = o.appName ?? "varco";
  const procId = String(process.pid);
  const limit = o.queueLimit ?? SYSLOG_QUEUE_LIMIT;
  const minBackoff = o.minBackoffMs ?? 200;
  const maxBackoff = o.maxBackoffMs ?? 30_000;
  const now = o.now ?? (() => new Date());

  // Ring-free queue: an array with a head index, compacted when half consumed.
  let queue: Buffer[] = [];
  let head = 0;
  let sent = 0;
  let dropped = 0;
  let droppedUnreported = 0;
  let socket: Socket | undefined;
  let connected = false;
  let writable = false;
  let closing = false;
  let backoff = minBackoff;
  let retry: NodeJS.Timeout | undefined;
  let lastError = "";
  let onIdle: (() => void) | undefined;

  const size = () => queue.length - head;

  const push = (frame: Buffer) => {
    if (closing) return;
    queue.push(frame);
    if (size() > limit) {
      head += 1;
      dropped += 1;
      if (droppedUnreported === 0) o.logger?.warn({ url: o.url, limit }, "audit syslog queue full: dropping the oldest messages");
      droppedUnreported += 1;
    }
    pump();
  };

  const pump = () => {
    if (!socket || !writable) return;
    if (droppedUnreported > 0) {
      const n = droppedUnreported;
      droppedUnreported = 0;
      o.logger?.warn({ url: o.url, dropped: n }, "audit syslog messages dropped (queue full)");
      const msg = formatSyslog({
        severity: SEVERITY.warning,
        timestamp: now().toISOString(),
        hostname: o.node,
        appName,
        procId,
        msgId: "dropped",
        params: [
          ["node", o.node],
          ["dropped", String(n)],
        ],
        msg: JSON.stringify({ dropped: n, total_dropped: dropped }),
      });
      writable = socket.write(frameOctetCounting(msg));
      sent += 1;
    }
    while (writable && head < queue.length) {
      const frame = queue[head] as Buffer;
      head += 1;
      writable = socket.write(frame);
      sent += 1;
    }
    if (head > 1024 && head * 2 > queue.length) {
      queue = queue.slice(head);
      head = 0;
    }
    if (size() === 0 && writable) onIdle?.();
  };

  const scheduleReconnect = () => {
    if (closing || retry) return;
    retry = setTimeout(() => {
      retry = undefined;
      open();
    }, backoff);
    retry.unref();
    backoff = Math.min(backoff * 2, maxBackoff);
  };

  const open = () => {
    if (closing) return;
    let s: Socket;
    try {
      s =
        target.protocol === "tls"
          ? tlsConnect({ host: target.host, port: target.port, ca, servername: isIP(target.host) ? undefined : target.host })
          : tcpConnect({ host: target.host, port: target.port });
    } catch (err) {
      lastError = (err as Error).message;
      scheduleReconnect();
      return;
    }
    socket = s;
    s.unref();
    s.setNoDelay(true);
    s.setKeepAlive(true, 30_000);
    s.on(target.protocol === "tls" ? "secureConnect" : "connect", () => {
      connected = true;
      writable = true;
      backoff = minBackoff;
      if (lastError) o.logger?.info({ url: o.url }, "audit syslog connected again");
      lastError = "";
      pump();
    });
    s.on("drain", () => {
      writable = true;
      pump();
    });
    // The receiver sends nothing in RFC 6587/5425; read and discard so the socket never stalls.
    s.on("data", () => undefined);
    s.on("error", (err) => {
      if (err.message !== lastError) o.logger?.warn({ url: o.url, err: err.message }, "audit syslog connection failed");
      lastError = err.message;
    });
    s.on("close", () => {
      if (socket === s) {
        socket = undefined;
        connected = false;
        writable = false;
        if (!lastError) lastError = "closed";
        scheduleReconnect();
      }
    });
  };

  open();

  return {
    event(e) {
      try {
        push(frameOctetCounting(formatSyslog(eventMessage(e, o.node, appName, procId))));
      } catch {
        // Never into the gateway's path.
      }
    },
    anchor(a) {
      try {
        push(frameOctetCounting(formatSyslog(anchorMessage(a, appName, procId, now()))));
      } catch {
        // Never into the gateway's path.
      }
    },
    stats: () => ({ queued: size(), sent, dropped, connected }),
    async close(timeoutMs = 2000) {
      if (closing) return;
      // Queued messages (or a connection not yet up or not drained): wait, bounded, for them to go out.
      if (size() > 0 || (socket && !writable)) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, timeoutMs);
          t.unref();
          onIdle = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
      closing = true;
      clearTimeout(retry);
      const s = socket;
      socket = undefined;
      if (s) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 500);
          t.unref();
          s.end(() => {
            clearTimeout(t);
            resolve();
          });
        });
        s.destroy();
      }
    },
  };
}
