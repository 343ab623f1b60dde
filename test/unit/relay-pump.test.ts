/**
 * `pump` (src/ssh/relay.ts) with plain Node streams: a destination that closes while the source is
 * paused by backpressure must not leave the source paused forever (ssh2 emits a channel's 'close'
 * only after its 'end', so a paused upstream channel would never close and its recording never be
 * closed).
 */
import { PassThrough, Readable, Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { pump } from "../../src/ssh/relay.ts";

describe("pump", () => {
  it("lets a paused source reach 'end' once the destination closes", async () => {
    const chunks = Array.from({ length: 200 }, () => Buffer.alloc(64 * 1024, 120));
    const from = Readable.from(chunks, { objectMode: false, highWaterMark: 16 * 1024 });
    // A destination that never calls back: its buffer fills, write() returns false, the source pauses.
    const to = new Writable({ highWaterMark: 16 * 1024, write: () => undefined });
    let counted = 0;
    const done = pump(from, to, (n) => {
      counted += n;
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(from.isPaused()).toBe(true);
    const ended = new Promise<void>((r) => from.once("end", () => r()));
    to.destroy();
    await done;
    await ended;
    // Only what was read before the close was counted as relayed.
    expect(counted).toBeLessThan(200 * 64 * 1024);
  }, 5000);

  it("a tap holding its drain does not keep the source paused after the destination closed", async () => {
    const from = new PassThrough();
    const to = new PassThrough();
    const held: Array<() => void> = [];
    const done = pump(from, to, () => undefined, { write: () => false, onDrain: (fn) => held.push(fn) });
    from.write(Buffer.alloc(1024));
    await new Promise((r) => setTimeout(r, 10));
    expect(from.isPaused()).toBe(true);
    const ended = new Promise<void>((r) => from.once("end", () => r()));
    from.end(Buffer.alloc(1024));
    to.destroy();
    await done;
    await ended;
    expect(held.length).toBe(1);
  }, 5000);
});
