/**
 * Running-hash checkpoints end to end: a recorded session writes more than one checkpoint's worth
 * (4 MiB) of output, the gateway is killed with SIGKILL, an early byte of the recording is edited
 * before the restart (which hashes the edited file and chains it as "interrupted"), and
 * `varco audit verify` still reports the edit, from the chained checkpoint.
 */
import { closeSync, openSync, readSync, writeSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, ROOT, startHarness } from "../helpers/harness.ts";

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ extraUsers: ["k01"] });
});
afterAll(async () => {
  await h?.stop();
});

const varco = (...args: string[]) => execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, ...args], { reject: false });
const sql = async (q: string) => String((await execa("sqlite3", [join(h.dir, "state/audit.db"), q])).stdout).trim();

describe("recording checkpoints across kill -9", () => {
  it("an interrupted recording edited before the restart is reported by audit verify", async () => {
    // 3.6 MB of zeros in base64 is 4.8 MB of output: at least one 4 MiB checkpoint.
    const child = execa(
      "ssh",
      [...h.sshOptions(["-tt"]), "k01_vm1@127.0.0.1", "head -c 3600000 /dev/zero | base64 -w 0; echo; echo big-done; sleep 60"],
      {
        env: h.askpassEnv("k01-pw", h.nextCode("k01")),
        reject: false,
        stdin: "ignore",
        buffer: false,
      },
    );
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("no big-done before the crash")), 60_000);
      let tail = "";
      child.stdout?.on("data", (d: Buffer) => {
        tail = (tail + d.toString()).slice(-64);
        if (tail.includes("big-done")) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    // The checkpoint is a batched event: wait until it is committed.
    let cp = "";
    for (let i = 0; i < 100 && !cp; i++) {
      cp = await sql("SELECT data FROM events WHERE type = 'recording_checkpoint' ORDER BY id DESC LIMIT 1");
      if (!cp) await new Promise((r) => setTimeout(r, 100));
    }
    expect(cp).not.toBe("");
    const checkpoint = JSON.parse(cp) as { channel: number; bytes: number; sha256: string };
    expect(checkpoint.bytes).toBeGreaterThanOrEqual(4 * 1024 * 1024);
    const path = await sql("SELECT path FROM recordings WHERE status = 'open'");
    expect(path).toMatch(/\.cast$/);

    h.signalGateway("SIGKILL");
    await child;

    // Before the restart: change one base64 'A' early in the file (same length, still valid asciicast).
    const fd = openSync(path, "r+");
    const buf = Buffer.alloc(4096);
    readSync(fd, buf, 0, buf.length, 0);
    const at = buf.indexOf("AAAA");
    expect(at).toBeGreaterThan(0);
    writeSync(fd, Buffer.from("B"), 0, 1, at + 1);
    closeSync(fd);

    await h.restartGateway();
    let status = "";
    for (let i = 0; i < 100 && status !== "interrupted"; i++) {
      status = await sql(`SELECT status FROM recordings WHERE path = '${path.replaceAll("'", "''")}'`);
      if (status !== "interrupted") await new Promise((r) => setTimeout(r, 100));
    }
    expect(status).toBe("interrupted");
    // The restart chained the edited file's hash: only the checkpoint can tell.
    const chained = await sql("SELECT data FROM events WHERE type = 'recording' ORDER BY id DESC LIMIT 1");
    expect(chained).toContain('"sha256"');

    const verify = await varco("audit", "verify");
    const out = `${verify.stdout}\n${verify.stderr}`;
    expect(verify.exitCode).not.toBe(0);
    expect(out).toContain("does not start with the prefix chained by its newest checkpoint");
    expect(out).toContain(path);
  }, 120_000);
});
