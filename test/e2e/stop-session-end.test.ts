/**
 * A session's `session_end` is written after its channels ended (recordings closed), bounded by
 * CHANNELS_END_WAIT_MS. A session channel whose upstream is still connecting (a target that accepts
 * TCP and never speaks, e.g. an overloaded sshd) holds the end that long. On a graceful stop
 * (SIGTERM) the end must still be written before the audit store closes, also when the client is
 * slow to close its TCP side after the gateway's DISCONNECT (a proxy that holds it 2.5 s): the
 * gateway cuts such a peer after 1 s, then waits for the channels. Without the cut the wait ran
 * past the stop and the session stayed `open`.
 *
 * SIGTERM is sent with process.kill: the harness's signal goes through execa, which kills with
 * SIGKILL after 5 s.
 */

import type { AddressInfo } from "node:net";
import { connect, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CODE_PROMPT, generateEd25519, PASSWORD_PROMPT } from "../../src/ssh/index.ts";
import { type Harness, ROOT, ssh2LoginAt, startHarness, TEST_ROUTES } from "../helpers/harness.ts";

const BIN = join(ROOT, "bin/varco.mjs");
let h: Harness;
let silent: Server;
const held = new Set<Socket>();

/** A proxy to the gateway that passes bytes at once but closes both sides only `finDelayMs` after the gateway's FIN. */
async function slowFinProxy(gatewayPort: number, finDelayMs: number): Promise<{ port: number; close(): void }> {
  const srv = createServer({ allowHalfOpen: true }, (client) => {
    const g = connect({ port: gatewayPort, host: "127.0.0.1", allowHalfOpen: true });
    client.on("data", (d) => g.write(d));
    g.on("data", (d) => client.write(d));
    client.on("error", () => undefined);
    g.on("error", () => undefined);
    g.on("end", () =>
      setTimeout(() => {
        client.destroy();
        g.destroy();
      }, finDelayMs),
    );
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  return { port: (srv.address() as AddressInfo).port, close: () => srv.close() };
}

const sessionsOf = async (uid: string) => {
  const r = await execa("node", [BIN, "--policy", h.env.policyFile, "audit", "list", "--json", "--user", uid], { reject: false });
  return (JSON.parse(String(r.stdout)) as { sessions: Array<{ id: string; result: string }> }).sessions;
};

async function waitFor(cond: () => boolean, ms: number) {
  for (let t = 0; t < ms && !cond(); t += 50) await new Promise((r) => setTimeout(r, 50));
  return cond();
}

beforeAll(async () => {
  silent = createServer((s) => {
    held.add(s);
    s.on("error", () => undefined);
  });
  await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
  const port = (silent.address() as AddressInfo).port;
  const key = generateEd25519("silent").public.split(" ").slice(0, 2).join(" ");
  h = await startHarness({
    extraUsers: ["se01", "se02", "se03"],
    extraRoutes: `${TEST_ROUTES}
  - groups: [testers]
    alias: silent
    target: silent
`,
    extraTargets: { silent: { port, hostKeyLine: key } },
    templateEdit: (t) => t.replace("  limits: {", "  stop_timeout: 1s\n  upstream_timeout: 60s\n  limits: {"),
  });
}, 120_000);

afterAll(async () => {
  await h?.stop();
  for (const s of held) s.destroy();
  silent?.close();
});

const login = (port: number, uid: string) =>
  ssh2LoginAt(port, `${uid}_silent`, (p) => (p === PASSWORD_PROMPT ? `${uid}-pw` : p === CODE_PROMPT ? h.nextCode(uid) : ""));

describe("session_end with a channel whose upstream is still connecting", () => {
  it("the user leaves: session_end is written within CHANNELS_END_WAIT_MS (+1 s)", async () => {
    const c = await login(h.port, "se01");
    c.on("error", () => undefined);
    c.exec("true", () => undefined);
    await new Promise((r) => setTimeout(r, 700));
    const t0 = Date.now();
    c.end();
    let s: Array<{ result: string }> = [];
    for (let i = 0; i < 80; i++) {
      s = await sessionsOf("se01");
      if (s[0] && s[0].result !== "open") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(s[0]?.result).toBe("upstream_failed");
    expect(Date.now() - t0).toBeLessThan(6000);
  }, 60_000);

  for (const [uid, delay] of [
    ["se02", 0],
    ["se03", 2500],
  ] as const) {
    it(`SIGTERM; the client closes its TCP side ${delay} ms after the gateway's DISCONNECT: session_end is still written before the stop`, async () => {
      if (delay > 0) await h.restartGateway();
      const proxy = await slowFinProxy(h.port, delay);
      const c = await login(proxy.port, uid);
      c.on("error", () => undefined);
      c.exec("true", () => undefined);
      await new Promise((r) => setTimeout(r, 700));
      const from = h.gatewayOutput().length;
      process.kill(h.gatewayPid() as number, "SIGTERM");
      const stopped = await waitFor(() => /"msg":"stopped"/.test(h.gatewayOutput().slice(from)), 40_000);
      expect(stopped, h.gatewayOutput().slice(-6000)).toBe(true);
      const s = await sessionsOf(uid);
      proxy.close();
      expect(
        s[0]?.result,
        h
          .gatewayOutput()
          .slice(from)
          .split("\n")
          .filter((l) => /session ended|recordings closed|stopp/.test(l))
          .join("\n"),
      ).not.toBe("open");
    }, 90_000);
  }
});
