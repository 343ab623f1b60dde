/**
 * An attacker who exhausts the gateway's file descriptors with plain TCP connections: accept(2)
 * fails with EMFILE (libuv accepts and drops the extra connections with its reserve descriptor), a
 * policy reload meanwhile cannot read the file (the last good policy stays). The gateway must stay
 * up and serve logins again once the connections are gone.
 *
 * The descriptor limit is lowered on the running gateway with prlimit(1) (util-linux), so the flood
 * needs a few hundred loopback connections, not tens of thousands; the pre-auth limits are raised so
 * that they do not close the connections first.
 */
import { readdirSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "../helpers/harness.ts";
import { processAlive } from "../helpers/process.ts";

let h: Harness;

beforeAll(async () => {
  h = await startHarness({
    extraUsers: ["e01"],
    templateEdit: (t) =>
      t.replace("limits: { max_unauthenticated: 20,", "limits: { max_unauthenticated: 2000, max_unauthenticated_per_source: 2000,"),
  });
}, 120_000);

afterAll(async () => {
  await h?.stop();
});

describe("file descriptors exhausted by a connection flood", () => {
  it("the gateway survives EMFILE on accept and serves logins once the flood is gone", async () => {
    const pid = h.gatewayPid() ?? 0;
    expect(processAlive(pid)).toBe(true);
    // The soft limit only: it can be raised back without privileges (the hard one could not).
    const before = String((await execa("prlimit", ["--pid", String(pid), "--nofile", "--noheadings", "--output", "SOFT"])).stdout).trim();
    await execa("prlimit", ["--pid", String(pid), "--nofile=96:"]);
    const sockets: Socket[] = [];
    try {
      // Bounded: 400 connections, each either accepted, or left in the kernel's backlog while accept fails.
      for (let i = 0; i < 400; i++) {
        const s = connect(h.port, "127.0.0.1");
        s.on("error", () => undefined);
        sockets.push(s);
      }
      const fds = () => readdirSync(`/proc/${pid}/fd`).length;
      for (let i = 0; i < 40 && fds() < 90; i++) await new Promise((r) => setTimeout(r, 100));
      // The limit is reached: every further accept(2) fails with EMFILE.
      expect(fds()).toBeGreaterThanOrEqual(90);
      await new Promise((r) => setTimeout(r, 500));
      expect(processAlive(pid)).toBe(true);
    } finally {
      for (const s of sockets) s.destroy();
    }
    await new Promise((r) => setTimeout(r, 500));
    expect(processAlive(pid), h.gatewayOutput().slice(-3000)).toBe(true);
    await execa("prlimit", ["--pid", String(pid), `--nofile=${before}:`]);
    const r = await h.ssh("e01_vm1", ["echo still-serving"]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toBe("still-serving\n");
  });
});
