/**
 * A channel's stderr, from either end, must never end the gateway process (every user's session):
 * ssh2 reports a misuse of a stderr stream as an 'error' event, and one nobody hears is an
 * uncaught exception.
 *
 * - The user: a target writes a lot of stderr, the user does not read it (its window fills, the
 *   gateway's downstream stderr stalls, the relay pauses the upstream one), then sends WINDOW_ADJUST
 *   and CHANNEL_CLOSE in one segment. The adjust resumes the relay; the close makes ssh2 end the
 *   downstream stderr in the same parse; a resumed relay wrote after that end.
 * - The target: CHANNEL_EOF and then CHANNEL_EXTENDED_DATA in one burst; ssh2 pushed the data after
 *   the end of the upstream channel's stderr (RFC 4254 §5.3 allows no data after EOF).
 *
 * The targets are ssh2 servers; the user is an ssh2 client through the real gateway.
 */
import type { AddressInfo } from "node:net";
import ssh2 from "ssh2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CODE_PROMPT, generateEd25519, PASSWORD_PROMPT } from "../../src/ssh/index.ts";
import { type Harness, ssh2LoginAt, startHarness, TEST_ROUTES } from "../helpers/harness.ts";
import { processAlive } from "../helpers/process.ts";

let h: Harness;
const servers: ssh2.Server[] = [];

/** An ssh2 target accepting any client; every exec runs `onExec` with the accepted channel. */
async function startTarget(name: string, onExec: (ch: ssh2.ServerChannel) => void): Promise<{ port: number; hostKeyLine: string }> {
  const pair = generateEd25519(name);
  const server = new ssh2.Server({ hostKeys: [pair.private] }, (c) => {
    c.on("error", () => undefined);
    c.on("authentication", (ctx) => ctx.accept());
    c.on("session", (acc) => acc().on("exec", (a) => onExec(a())));
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return { port: (server.address() as AddressInfo).port, hostKeyLine: pair.public.split(" ").slice(0, 2).join(" ") };
}

beforeAll(async () => {
  const noisy = await startTarget("noisy", (ch) => {
    ch.on("data", () => undefined);
    ch.stderr.write(Buffer.alloc(8 * 1024 * 1024, 0x65));
  });
  const late = await startTarget("late-stderr", (accepted) => {
    const ch = accepted as unknown as {
      eof(): void;
      outgoing: { id: number };
      _client: { _protocol: { channelExtData(id: number, d: Buffer, t: number): void } };
    };
    ch.eof();
    ch._client._protocol.channelExtData(ch.outgoing.id, Buffer.from("late stderr\n"), 1);
  });
  h = await startHarness({
    extraUsers: ["uc01", "ls01"],
    extraRoutes: `${TEST_ROUTES}
  - groups: [testers]
    alias: noisy
    target: noisy
    record: false
  - groups: [testers]
    alias: late
    target: late
`,
    extraTargets: { noisy, late },
  });
}, 120_000);

afterAll(async () => {
  await h?.stop();
  for (const s of servers) s.close();
});

const login = (uid: string, alias: string) =>
  ssh2LoginAt(h.port, `${uid}_${alias}`, (p) => (p === PASSWORD_PROMPT ? `${uid}-pw` : p === CODE_PROMPT ? h.nextCode(uid) : ""));

describe("a channel's stderr misused from either end", () => {
  it("a user closing a channel whose stderr was stalled, with a window adjust in the same segment, does not end the gateway", async () => {
    const pid = h.gatewayPid() as number;
    const c = await login("uc01", "noisy");
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

  it("a target sending stderr after its EOF does not end the gateway", async () => {
    const pid = h.gatewayPid() as number;
    const c = await login("ls01", "late");
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
