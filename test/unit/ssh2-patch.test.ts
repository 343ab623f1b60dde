/**
 * varco's patch to ssh2 (patches/ssh2+1.17.0.patch): it is applied to the installed ssh2, it
 * still applies to a pristine ssh2 1.17.0 (what `npm ci` runs through patch-package), the start-up
 * check refuses an unpatched copy, and the patched packet path (coalesced writes, reused packet
 * arenas shared by connections, pooled padding) carries data byte for byte with both bulk ciphers.
 */
import { createHash, randomBytes } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { execa } from "execa";
import ssh2 from "ssh2";
import { afterAll, describe, expect, it } from "vitest";
import { generateEd25519 } from "../../src/ssh/keys.ts";
import { assertSsh2Patched, SSH2_VERSION, Ssh2PatchError } from "../../src/ssh/ssh2-internals.ts";

const ROOT = join(dirname(new URL(import.meta.url).pathname), "../..");
const PATCH = join(ROOT, `patches/ssh2+${SSH2_VERSION}.patch`);
const SSH2_DIR = dirname(createRequire(import.meta.url).resolve("ssh2/package.json"));
const tmp = mkdtempSync(join(tmpdir(), "varco-ssh2-patch-"));

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A copy of the installed ssh2 (package.json + lib/) under `<dir>/node_modules/ssh2`, as the patch's paths expect. */
function copySsh2(dir: string): string {
  const to = join(dir, "node_modules/ssh2");
  mkdirSync(to, { recursive: true });
  cpSync(join(SSH2_DIR, "package.json"), join(to, "package.json"));
  cpSync(join(SSH2_DIR, "lib"), join(to, "lib"), { recursive: true, filter: (src) => !src.includes("/build/") });
  return to;
}

/** `git apply` outside any repository (plain patch semantics), in `cwd`. */
const gitApply = (cwd: string, args: string[]) =>
  execa("git", ["apply", ...args, PATCH], { cwd, reject: false, env: { GIT_DIR: "/nonexistent" } });

describe("the ssh2 patch", () => {
  it("is applied to the installed ssh2, which is exactly the pinned version", () => {
    expect(JSON.parse(readFileSync(join(SSH2_DIR, "package.json"), "utf8")).version).toBe(SSH2_VERSION);
    expect(JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).dependencies.ssh2).toBe(SSH2_VERSION);
    expect(() => assertSsh2Patched()).not.toThrow();
  });

  it("still applies to a pristine ssh2 (the start-up check refuses the pristine copy, accepts the patched one)", async () => {
    const dir = join(tmp, "pristine");
    const copy = copySsh2(dir);
    // Undo the patch on the copy: that it reverses cleanly proves the installed files are exactly the patched ones.
    const reverse = await gitApply(dir, ["-R"]);
    expect(reverse.stderr).toBe("");
    expect(reverse.exitCode).toBe(0);
    expect(() => assertSsh2Patched(copy)).toThrow(Ssh2PatchError);
    const forward = await gitApply(dir, []);
    expect(forward.stderr).toBe("");
    expect(forward.exitCode).toBe(0);
    expect(() => assertSsh2Patched(copy)).not.toThrow();
  });

  it("the start-up check refuses another ssh2 version", () => {
    const copy = copySsh2(join(tmp, "other-version"));
    const pkg = JSON.parse(readFileSync(join(copy, "package.json"), "utf8"));
    writeFileSync(join(copy, "package.json"), JSON.stringify({ ...pkg, version: "1.18.0" }));
    expect(() => assertSsh2Patched(copy)).toThrow(/1\.18\.0 is installed/);
  });
});

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/**
 * An in-process ssh2 server that answers every exec with: the sha256 of what it read on stdin
 * (on stderr) and, on stdout, `size` bytes of the pattern it was given; real loopback TCP.
 */
async function startEchoServer(payload: Buffer): Promise<{ port: number; close(): void }> {
  const hostKey = generateEd25519("echo").private;
  const server = new ssh2.Server({ hostKeys: [hostKey] }, (client) => {
    client.on("authentication", (ctx) => ctx.accept());
    client.on("ready", () => {
      client.on("session", (accept) => {
        const session = accept();
        session.on("exec", (acceptExec) => {
          const ch = acceptExec();
          const h = createHash("sha256");
          ch.on("data", (d: Buffer) => h.update(d));
          ch.on("end", () => {
            ch.stderr.write(`${h.digest("hex")}\n`);
            // Down: the payload in uneven slices, written without waiting (the window and arenas must cope).
            for (let p = 0; p < payload.length; p += 50_001) ch.write(payload.subarray(p, p + 50_001));
            ch.exit(0);
            ch.end();
          });
        });
      });
    });
    client.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return { port: (server.address() as { port: number }).port, close: () => server.close() };
}

/** Uploads `up`, collects the download; resolves with the sha256 the server saw and what came down. */
function transfer(port: number, cipher: string, up: Buffer): Promise<{ seen: string; down: Buffer }> {
  return new Promise((resolve, reject) => {
    const c = new ssh2.Client();
    c.on("error", reject);
    c.on("ready", () => {
      c.exec("x", (err, ch) => {
        if (err) return reject(err);
        const parts: Buffer[] = [];
        let seen = "";
        ch.on("data", (d: Buffer) => parts.push(d));
        ch.stderr.on("data", (d: Buffer) => {
          seen += d.toString();
        });
        ch.on("close", () => {
          c.end();
          resolve({ seen: seen.trim(), down: Buffer.concat(parts) });
        });
        for (let p = 0; p < up.length; p += 70_003) ch.write(up.subarray(p, p + 70_003));
        ch.end();
      });
    });
    c.connect({ host: "127.0.0.1", port, username: "u", password: "p", algorithms: { cipher: [cipher as never] } });
  });
}

describe("the patched packet path", () => {
  for (const cipher of ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com"]) {
    it(`carries 6 concurrent 8 MiB transfers each way byte for byte (${cipher}, arenas shared by connections)`, async () => {
      const down = randomBytes(8 * 1024 * 1024);
      const server = await startEchoServer(down);
      try {
        const ups = Array.from({ length: 6 }, () => randomBytes(8 * 1024 * 1024));
        const results = await Promise.all(ups.map((u) => transfer(server.port, cipher, u)));
        for (const [i, r] of results.entries()) {
          expect(r.seen).toBe(sha256(ups[i] as Buffer));
          expect(r.down.length).toBe(down.length);
          expect(sha256(r.down)).toBe(sha256(down));
        }
      } finally {
        server.close();
      }
    }, 120_000);
  }
});
