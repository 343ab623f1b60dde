import { describe, expect, it } from "vitest";
import { type FileEvent, rsyncPaths, scpObserver, sftpObserver } from "../../src/audit/index.ts";
import { type ParsedCommand, parseCommand } from "../../src/routing/index.ts";

/** parseCommand(line), which must be of `kind`. */
function parsed<K extends ParsedCommand["kind"]>(kind: K, line: string): Extract<ParsedCommand, { kind: K }> {
  const c = parseCommand(line);
  if (c.kind !== kind) throw new Error(`${line} parsed as ${c.kind}`);
  return c as Extract<ParsedCommand, { kind: K }>;
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const u64 = (n: number) => Buffer.concat([u32(0), u32(n)]);
const str = (s: string | Buffer) => {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(s);
  return Buffer.concat([u32(b.length), b]);
};
const packet = (type: number, ...parts: Buffer[]) => {
  const body = Buffer.concat([Buffer.from([type]), ...parts]);
  return Buffer.concat([u32(body.length), body]);
};

/** Feeds `data` split into pieces of `size` bytes (1 = worst case). */
const feed = (fn: (b: Buffer) => void, data: Buffer, size: number) => {
  for (let i = 0; i < data.length; i += size) fn(data.subarray(i, i + size));
};

describe("SFTP v3 observer", () => {
  const handle = Buffer.from("h1");
  const payload = Buffer.alloc(5000, 7);
  const up = Buffer.concat([
    packet(1, u32(3)), // INIT
    packet(3, u32(1), str("/data/report.pdf"), u32(0x1a), u32(0)), // OPEN write|creat|trunc
    packet(6, u32(2), str(handle), u64(0), str(payload)), // WRITE
    packet(6, u32(3), str(handle), u64(5000), str(payload)), // WRITE
    packet(4, u32(4), str(handle)), // CLOSE
    packet(18, u32(5), str("/data/a"), str("/data/b")), // RENAME
    packet(13, u32(6), str("/data/old")), // REMOVE
  ]);
  const ok = (id: number) => packet(101, u32(id), u32(0), str(""), str(""));
  const down = Buffer.concat([
    packet(2, u32(3)),
    packet(102, u32(1), str(handle)),
    ok(2),
    ok(3),
    ok(4),
    ok(5),
    packet(101, u32(6), u32(2), str("no such file"), str("")),
  ]);

  for (const size of [1, 7, 1 << 20]) {
    it(`reports open/write/close, rename and a failed remove (chunks of ${size} bytes)`, () => {
      const events: FileEvent[] = [];
      const o = sftpObserver((e) => events.push(e));
      feed(o.up, up, size);
      feed(o.down, down, size);
      o.finish();
      expect(events).toEqual([
        {
          protocol: "sftp",
          op: "close",
          path: "/data/report.pdf",
          flags: "write,creat,trunc",
          bytesRead: 0,
          bytesWritten: 10000,
          ok: true,
        },
        { protocol: "sftp", op: "rename", path: "/data/a", toPath: "/data/b", ok: true },
        { protocol: "sftp", op: "remove", path: "/data/old", ok: false },
      ]);
    });
  }

  it("counts bytes read from DATA replies", () => {
    const events: FileEvent[] = [];
    const o = sftpObserver((e) => events.push(e));
    o.up(
      Buffer.concat([
        packet(3, u32(1), str("/f"), u32(1), u32(0)),
        packet(5, u32(2), str(handle), u64(0), u32(32768)),
        packet(4, u32(3), str(handle)),
      ]),
    );
    o.down(
      Buffer.concat([
        packet(102, u32(1), str(handle)),
        packet(103, u32(2), str(Buffer.alloc(1234))),
        packet(101, u32(3), u32(0), str(""), str("")),
      ]),
    );
    expect(events[0]).toMatchObject({ op: "close", path: "/f", bytesRead: 1234, bytesWritten: 0 });
  });

  it("gives up on a stream that is not SFTP instead of buffering it", () => {
    const o = sftpObserver(() => undefined);
    expect(() => o.up(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]))).not.toThrow();
  });
});

describe("legacy scp observer", () => {
  it("reads C/D/E lines in sink mode (upload) and skips file data", () => {
    const events: FileEvent[] = [];
    const o = scpObserver(parsed("scp", "scp -r -t /srv/in/"), (e) => events.push(e));
    const data = Buffer.concat([
      Buffer.from("D0755 0 tree\n"),
      Buffer.from("C0644 5 a.txt\n"),
      Buffer.from("hello"),
      Buffer.from([0]),
      Buffer.from("C0644 3 b\n"),
      Buffer.from("C\nx"),
      Buffer.from([0]),
      Buffer.from("E\n"),
    ]);
    feed(o.up, data, 2);
    expect(events).toEqual([
      { protocol: "scp", op: "upload", path: "/srv/in/tree/a.txt", size: 5 },
      { protocol: "scp", op: "upload", path: "/srv/in/tree/b", size: 3 },
    ]);
  });

  it("reads the source side (download) from the target", () => {
    const events: FileEvent[] = [];
    const o = scpObserver(parsed("scp", "scp -f /var/log/syslog"), (e) => events.push(e));
    o.down(Buffer.concat([Buffer.from("C0640 4 syslog\nlogs"), Buffer.from([0])]));
    expect(events).toEqual([{ protocol: "scp", op: "download", path: "/var/log/syslog", size: 4 }]);
  });

  it("a single file upload lands on the path itself, or inside it when it ends in /", () => {
    const events: FileEvent[] = [];
    scpObserver(parsed("scp", "scp -t /srv/x.bin"), (e) => events.push(e)).up(Buffer.from("C0644 0 local.bin\n"));
    scpObserver(parsed("scp", "scp -d -t /srv/in/"), (e) => events.push(e)).up(Buffer.from("C0644 0 local.bin\n"));
    expect(events.map((e) => e.path)).toEqual(["/srv/x.bin", "/srv/in/local.bin"]);
  });

  it("finds rsync's paths and direction from its server command line", () => {
    expect(rsyncPaths(parsed("rsync", "rsync --server --sender -logDtpre.iLsfxCIvu . /srv/data/"))).toEqual({
      direction: "download",
      paths: ["/srv/data/"],
    });
    expect(rsyncPaths(parsed("rsync", "rsync --server -logDtpre.iLsfxCIvu . /srv/in"))).toEqual({
      direction: "upload",
      paths: ["/srv/in"],
    });
  });
});
