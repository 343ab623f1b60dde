/**
 * The exit status of a command that ends at once. A target may answer an exec request with
 * CHANNEL_SUCCESS, the output, EOF, `exit-status` and CLOSE (RFC 4254 §6.5, §6.10) in one TCP
 * segment: ssh2 then hands over the upstream channel and emits its `exit` event in the same parse,
 * before any promise continuation runs. A relay that started listening for `exit` one microtask
 * later lost it, and the user's ssh exited 255 instead of the command's status (seen under load
 * with OpenSSH targets whose commands end in a few milliseconds).
 *
 * The target is an ssh2 server (with varco's ssh2 patch every packet of one event-loop turn leaves
 * in one socket write) that answers each exec synchronously; the user is the real OpenSSH client
 * through the real gateway, on a recorded route and on one without recording.
 *
 * The same burst ends the user's connection at once: the session's `session_end` must still come
 * after its channels' `recording` events (their recordings are closed by the recording writer
 * thread, later than the connection's close) and carry the command's exit status.
 */
import type { AddressInfo } from "node:net";
import { execa } from "execa";
import ssh2 from "ssh2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateEd25519 } from "../../src/ssh/index.ts";
import { closedSessionOf, type Harness, startHarness, TEST_ROUTES } from "../helpers/harness.ts";

interface InstantTarget {
  readonly port: number;
  readonly hostKeyLine: string;
  close(): void;
}

/** An ssh2 server accepting any client; every exec `exit N` writes `out N\n` and ends with status N in the same turn. */
async function startInstantTarget(): Promise<InstantTarget> {
  const pair = generateEd25519("instant-target");
  const clients = new Set<ssh2.Connection>();
  const server = new ssh2.Server({ hostKeys: [pair.private] }, (client) => {
    clients.add(client);
    client.on("close", () => clients.delete(client));
    client.on("error", () => undefined);
    client.on("authentication", (ctx) => ctx.accept());
    client.on("session", (accept) => {
      accept().on("exec", (acc, _rej, info) => {
        const code = Number(/^exit (\d+)$/.exec(info.command)?.[1] ?? 99);
        const ch = acc();
        ch.write(`out ${code}\n`);
        ch.exit(code);
        ch.end();
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    hostKeyLine: pair.public.split(" ").slice(0, 2).join(" "),
    close: () => {
      for (const c of clients) c.end();
      server.close();
    },
  };
}

let h: Harness;
let target: InstantTarget;
let cm: string[];

beforeAll(async () => {
  target = await startInstantTarget();
  h = await startHarness({
    extraUsers: ["x01", "x02", "x03"],
    extraRoutes: `${TEST_ROUTES}
  - groups: [testers]
    alias: instant
    target: instant
  - groups: [testers]
    alias: instantnorec
    target: instant
    record: false
`,
    extraTargets: { instant: target },
  });
  cm = await h.master("x01_instant");
}, 120_000);

afterAll(async () => {
  await h?.stop();
  target?.close();
});

describe("a command that ends in the same packet burst as its start", () => {
  for (const alias of ["instant", "instantnorec"]) {
    it(`passes its exit status to the user (${alias === "instant" ? "recorded route" : "record: false"})`, async () => {
      const master = alias === "instant" ? cm : await h.master(`x01_${alias}`);
      for (const code of [0, 7, 0, 3, 42, 0]) {
        const r = await execa("ssh", [...master, `x01_${alias}@127.0.0.1`, `exit ${code}`], { reject: false, timeout: 20_000 });
        expect({ code: r.exitCode, stdout: r.stdout }).toEqual({ code, stdout: `out ${code}` });
      }
    });
  }
});

describe("the end of a session whose command ends at once", () => {
  it("session_end is its last event, after the recording's, and carries the exit status", async () => {
    for (const uid of ["x02", "x03"]) {
      const r = await h.ssh(`${uid}_instant`, ["exit 3"]);
      expect(r.exitCode).toBe(3);
      const shown = await closedSessionOf(h.env.policyFile, uid);
      const types = shown.events.map((e) => e.type);
      expect(types.at(-1)).toBe("session_end");
      expect(types).toContain("recording");
      expect(shown.events.at(-1)?.data.exit_status).toBe(3);
      expect(shown.recordings.map((x) => x.status)).toEqual(["complete"]);
    }
  });
});
