/**
 * A target that sends CHANNEL_EXTENDED_DATA (stderr) after its CHANNEL_EOF, in the same burst.
 * ssh2's client pushes the data into the upstream channel's stderr Readable after push(null):
 * Node emits ERR_STREAM_PUSH_AFTER_EOF as an 'error' on that stream, which nobody listens to.
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
  const pair = generateEd25519("late-stderr");
  target = new ssh2.Server({ hostKeys: [pair.private] }, (c) => {
    c.on("error", () => undefined);
    c.on("authentication", (ctx) => ctx.accept());
    c.on("session", (acc) =>
      acc().on("exec", (a) => {
        const ch = a() as unknown as {
          eof(): void;
          outgoing: { id: number };
          _client: { _protocol: { channelExtData(id: number, d: Buffer, t: number): void } };
        };
        ch.eof();
        ch._client._protocol.channelExtData(ch.outgoing.id, Buffer.from("late stderr\n"), 1);
      }),
    );
  });
  await new Promise<void>((r) => target.listen(0, "127.0.0.1", () => r()));
  h = await startHarness({
    extraUsers: ["ls01"],
    extraRoutes: `${TEST_ROUTES}
  - groups: [testers]
    alias: late
    target: late
`,
    extraTargets: { late: { port: (target.address() as AddressInfo).port, hostKeyLine: pair.public.split(" ").slice(0, 2).join(" ") } },
  });
}, 120_000);

afterAll(async () => {
  await h?.stop();
  target?.close();
});

describe("a target that sends stderr after EOF", () => {
  it("does not end the gateway", async () => {
    const pid = h.gatewayPid() as number;
    const c = await ssh2LoginAt(h.port, "ls01_late", (p) =>
      p === PASSWORD_PROMPT ? "ls01-pw" : p === CODE_PROMPT ? h.nextCode("ls01") : "",
    );
    c.on("error", () => undefined);
    c.exec("anything", (_e, ch) => {
      ch?.on("data", () => undefined);
      ch?.stderr.on("data", () => undefined);
    });
    await new Promise((r) => setTimeout(r, 2000));
    c.end();
    expect(processAlive(pid), h.gatewayOutput().slice(-3000)).toBe(true);
  }, 60_000);
});
