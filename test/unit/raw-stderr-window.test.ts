/**
 * Why a recorded exec sometimes hung with its stderr undelivered: ssh2's server channel keeps one
 * `_waitWindow` flag for stdout and stderr, and on WINDOW_ADJUST (RFC 4254 §5.2) retried only the
 * stdout chunk waiting for window space (`if (_chunk) … else if (_chunkErr) …`), never clearing it.
 * So (1) a stderr write made while stdout also waits for window is never sent and its callback never
 * runs: the relay's end-of-stream barrier on `down.stderr` never resolves, the session never ends;
 * (2) once stdout has waited once, a later stderr write that waits for window resends the stale
 * stdout chunk instead (duplicated stdout bytes, a second write callback) and drops the stderr rest.
 * The recorder's pauses made (1) likely: stderr arrived while stdout's window was exhausted.
 * Real ssh2 server and client over loopback TCP; the server writes what a relayed exec writes.
 */
import { createHash } from "node:crypto";
import type { AddressInfo } from "node:net";
import ssh2, { type ServerChannel } from "ssh2";
import { describe, expect, it } from "vitest";
import { generateEd25519 } from "../../src/ssh/keys.ts";

/** ssh2's view of a channel's sending side (window in bytes). */
const windowOf = (ch: ServerChannel) => (ch as unknown as { outgoing: { window: number } }).outgoing.window;

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** A server whose every exec runs `script(channel)`; a client that runs one exec and collects both streams. */
async function withExec(
  script: (ch: ServerChannel) => Promise<void>,
  client: (stream: ssh2.ClientChannel) => void = () => undefined,
): Promise<{ stdout: Buffer; stderr: Buffer; scriptDone: boolean }> {
  let scriptDone = false;
  const server = new ssh2.Server({ hostKeys: [generateEd25519("w").private] }, (conn) => {
    conn.on("authentication", (ctx) => ctx.accept());
    conn.on("ready", () =>
      conn.on("session", (accept) =>
        accept().on("exec", (acceptExec) => {
          const ch = acceptExec();
          void script(ch).then(() => {
            scriptDone = true;
            ch.exit(0);
            ch.end();
          });
        }),
      ),
    );
    conn.on("error", () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as AddressInfo).port;
  const c = new ssh2.Client();
  try {
    return await new Promise((resolve, reject) => {
      // Bounded: a stuck stderr write shows as a timeout, not a hung test.
      const limit = setTimeout(() => resolve({ stdout: Buffer.concat(out), stderr: Buffer.concat(err), scriptDone }), 8000);
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      c.on("ready", () =>
        c.exec("x", (e, stream) => {
          if (e) return reject(e);
          stream.on("data", (d: Buffer) => out.push(d));
          stream.stderr.on("data", (d: Buffer) => err.push(d));
          stream.on("close", () => {
            clearTimeout(limit);
            resolve({ stdout: Buffer.concat(out), stderr: Buffer.concat(err), scriptDone });
          });
          client(stream);
        }),
      );
      c.on("error", reject);
      c.connect({ host: "127.0.0.1", port, username: "u", password: "p" });
    });
  } finally {
    c.end();
    server.close();
  }
}

/** Writes `data` on `w` and resolves once its callback ran (false after `ms` without it). */
const written = (w: NodeJS.WritableStream, data: Buffer, ms = 6000) =>
  new Promise<boolean>((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    w.write(data, () => {
      clearTimeout(t);
      resolve(true);
    });
  });

describe("ssh2 server channel: stderr and stdout waiting for window space", () => {
  it("a stderr write made while stdout waits for window is sent once the window opens", async () => {
    const stdout = Buffer.alloc(4 * 1024 * 1024, 0x61);
    let stderrCallback = false;
    let stdoutCallback = false;
    let sawBothWaiting = false;
    const r = await withExec(
      async (ch) => {
        const out = written(ch, stdout);
        // The client reads nothing yet: the 2 MiB window is used up with stdout still pending.
        for (let i = 0; i < 200 && windowOf(ch) > 0; i++) await new Promise((res) => setTimeout(res, 10));
        sawBothWaiting = windowOf(ch) === 0 && ch.writableLength > 0;
        const err = written(ch.stderr, Buffer.from("err\xffline\n", "latin1"));
        stdoutCallback = await out;
        stderrCallback = await err;
      },
      (stream) => {
        stream.pause();
        setTimeout(() => stream.resume(), 500);
      },
    );
    expect(sawBothWaiting).toBe(true);
    expect(stdoutCallback).toBe(true);
    expect(stderrCallback).toBe(true);
    expect(r.scriptDone).toBe(true);
    expect(sha256(r.stdout)).toBe(sha256(stdout));
    expect(r.stderr.toString("latin1")).toBe("err\xffline\n");
  }, 20_000);

  it("after stdout waited for window, a stderr flood is sent whole and stdout is not resent", async () => {
    const stdout = Buffer.alloc(5 * 1024 * 1024 + 123, 0x6f);
    const stderr = Buffer.alloc(5 * 1024 * 1024 + 77, 0x65);
    const callbacks: boolean[] = [];
    const r = await withExec(async (ch) => {
      // More than the client's 2 MiB window each: both streams wait for WINDOW_ADJUST, one after the other.
      callbacks.push(await written(ch, stdout));
      callbacks.push(await written(ch.stderr, stderr));
    });
    expect(callbacks).toEqual([true, true]);
    expect(r.stdout.length).toBe(stdout.length);
    expect(r.stderr.length).toBe(stderr.length);
    expect(r.scriptDone).toBe(true);
  }, 20_000);
});
