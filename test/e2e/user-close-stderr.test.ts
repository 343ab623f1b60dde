/**
 * A user whose channel's stderr window is exhausted (the target writes a lot of stderr, the client
 * does not read it) sends WINDOW_ADJUST and CHANNEL_CLOSE in one segment. The adjust lets the
 * gateway's down.stderr drain, so the relay resumes the upstream stderr (on the next tick); the close
 * makes ssh2 end() down.stderr in the same parse. The resumed pump then writes to the ended
 * ServerStderr: ERR_STREAM_WRITE_AFTER_END is emitted as 'error' on it, which nobody hears.
 */
import type { AddressInfo } from "node:net";
import ssh2 from "ssh2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CODE_PROMPT, generateEd25519, PASSWORD_PROMPT } from "../../src/ssh/index.ts";
import { type Harness, ssh2LoginAt, startHarness, TEST_ROUTES } from "../helpers/harness.ts";
import { processAlive } from "../helpers/process.ts";

let h: Harness;
let target: ssh2.Server;

beforeAll(async () => {
  const pair = generateEd25519("noisy");
  target = new ssh2.Server({ hostKeys: [pair.private] }, (c) => {
    c.on("error", () => undefined);
    c.on("authentication", (ctx) => ctx.accept());
    c.on("session", (acc) =>
      acc().on("exec", (a) => {
        const ch = a();
        ch.on("data", () => undefined);
        ch.stderr.write(Buffer.alloc(8 * 1024 * 1024, 0x65));
      }),
    );
  });
  await new Promise<void>((r) => target.listen(0, "127.0.0.1", () => r()));
  h = await startHarness({
    extraUsers: ["uc01"],
    extraRoutes: `${TEST_ROUTES}
  - groups: [testers]
    alias: noisy
    target: noisy
    record: false
`,
    extraTargets: { noisy: { port: (target.address() as AddressInfo).port, hostKeyLine: pair.public.split(" ").slice(0, 2).join(" ") } },
  });
}, 120_000);

afterAll(async () => {
  await h?.stop();
  target?.close();
});

describe("a user that closes a channel whose stderr was stalled, with a window adjust in the same segment", () => {
  it("does not end the gateway", async () => {
    const pid = h.gatewayPid() as number;
    const c = await ssh2LoginAt(h.port, "uc01_noisy", (p) =>
      p === PASSWORD_PROMPT ? "uc01-pw" : p === CODE_PROMPT ? h.nextCode("uc01") : "",
    );
    c.on("error", () => undefined);
    const ch = await new Promise<ssh2.ClientChannel>((resolve, reject) => c.exec("noise", (e, s) => (e ? reject(e) : resolve(s))));
    // stderr is not read: the client's window fills, the gateway's down.stderr stalls, its pump pauses up.stderr.
    await new Promise((r) => setTimeout(r, 2500));
    const proto = (c as unknown as { _protocol: { channelWindowAdjust(id: number, n: number): void } })._protocol;
    const id = (ch as unknown as { outgoing: { id: number } }).outgoing.id;
    proto.channelWindowAdjust(id, 64 * 1024 * 1024);
    ch.close();
    await new Promise((r) => setTimeout(r, 2000));
    c.end();
    expect(processAlive(pid), h.gatewayOutput().slice(-3000)).toBe(true);
  }, 60_000);
});
