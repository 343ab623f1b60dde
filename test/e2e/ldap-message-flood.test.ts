/**
 * An LDAP server (or anything answering on directory.ldap.url) that replies to a bind with ~5000
 * tiny valid LDAP messages in one TCP segment. ldapts' MessageParser.read() recurses once per
 * message in a received chunk: the recursion overflows the stack inside the socket's 'data'
 * handler, an uncaught RangeError that ends the gateway process.
 */

import type { AddressInfo } from "node:net";
import { createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CODE_PROMPT, PASSWORD_PROMPT } from "../../src/ssh/index.ts";
import { type Harness, ssh2LoginAt, startHarness } from "../helpers/harness.ts";
import { processAlive } from "../helpers/process.ts";

let h: Harness;
let ldap: Server;
let armed = false;
const socks = new Set<Socket>();
// SearchResultEntry for message id 99, which nobody waits for: 30 09 02 01 63 64 04 04 00 30 00
const one = Buffer.from([0x30, 0x09, 0x02, 0x01, 0x63, 0x64, 0x04, 0x04, 0x00, 0x30, 0x00]);

beforeAll(async () => {
  ldap = createServer((s) => {
    socks.add(s);
    s.on("error", () => undefined);
    s.once("data", () => (armed ? s.write(Buffer.concat(Array(5500).fill(one))) : s.destroy()));
  });
  await new Promise<void>((r) => ldap.listen(0, "127.0.0.1", () => r()));
  const url = `ldap://127.0.0.1:${(ldap.address() as AddressInfo).port}`;
  h = await startHarness({ extraUsers: ["lf01"], templateEdit: (t) => t.replace("url: @LDAP_URL@", `url: ${url}`) });
}, 120_000);

afterAll(async () => {
  await h?.stop();
  for (const s of socks) s.destroy();
  ldap?.close();
});

describe("an LDAP server that answers with thousands of tiny messages at once", () => {
  it("does not end the gateway", async () => {
    const pid = h.gatewayPid() as number;
    armed = true;
    const login = ssh2LoginAt(h.port, "lf01_vm1", (p) =>
      p === PASSWORD_PROMPT ? "lf01-pw" : p === CODE_PROMPT ? h.nextCode("lf01") : "",
    ).then(
      (c) => c.end(),
      () => undefined,
    );
    await Promise.race([login, new Promise((r) => setTimeout(r, 10_000))]);
    expect(processAlive(pid), h.gatewayOutput().slice(-3000)).toBe(true);
  }, 60_000);
});
