/**
 * A target that accepts TCP but never sends its SSH identification (a hung or overloaded sshd: the
 * kernel still completes the TCP handshake) makes ssh2 emit 'error' twice: "Timed out while
 * waiting for handshake", then, once it destroyed the socket, "Connection lost before handshake".
 * connectUpstream listened with once("error"): the
 * second one is an unhandled 'error' event, which ended the gateway process (every session).
 */

import type { AddressInfo } from "node:net";
import { createServer, type Socket } from "node:net";
import { expect, it } from "vitest";
import { generateEd25519 } from "../../src/ssh/index.ts";
import { connectUpstream, parseHostKeyLine } from "../../src/ssh/upstream.ts";

it("a target that never speaks: connectUpstream rejects, and nothing is thrown afterwards", async () => {
  const held = new Set<Socket>();
  const silent = createServer((s) => held.add(s));
  await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
  const port = (silent.address() as AddressInfo).port;
  const uncaught: Error[] = [];
  const onUncaught = (err: Error) => uncaught.push(err);
  // vitest would report it as an unhandled error; collect it to show it.
  process.prependListener("uncaughtException", onUncaught);
  try {
    const pair = generateEd25519("egress");
    const hostKey = parseHostKeyLine(generateEd25519("t").public.split(" ").slice(0, 2).join(" "));
    await expect(
      connectUpstream({
        name: "silent",
        host: "127.0.0.1",
        port,
        username: "x",
        privateKey: Buffer.from(pair.private),
        hostKey,
        timeoutMs: 500,
      }),
    ).rejects.toThrow(/Timed out while waiting for handshake/);
    await new Promise((r) => setTimeout(r, 500));
    expect(uncaught.map((e) => e.message)).toEqual([]);
  } finally {
    process.off("uncaughtException", onUncaught);
    for (const s of held) s.destroy();
    silent.close();
  }
});
