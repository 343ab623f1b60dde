/** Loopback port helpers for the demo and the tests. */
import { connect, createServer } from "node:net";

/** A currently free TCP port on 127.0.0.1 (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Waits until something accepts TCP connections on host:port.
 * Bounded: tries every 50 ms up to `timeoutMs` (default 10 000 ms), then throws.
 */
export async function waitForPort(port: number, host = "127.0.0.1", timeoutMs = 10_000, netns?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; Date.now() < deadline && i < 10_000; i++) {
    const ok = netns
      ? await probeIn(netns, host, port)
      : await new Promise<boolean>((resolve) => {
          const s = connect({ port, host });
          s.once("connect", () => {
            s.destroy();
            resolve(true);
          });
          s.once("error", () => resolve(false));
        });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing is listening on ${host}:${port} after ${timeoutMs} ms`);
}

/** Whether host:port accepts a TCP connection inside network namespace `netns`. */
async function probeIn(netns: string, host: string, port: number): Promise<boolean> {
  const { execa } = await import("execa");
  const script =
    "const s=require('net').connect({host:process.argv[1],port:+process.argv[2]});s.on('connect',()=>process.exit(0));s.on('error',()=>process.exit(1));";
  const r = await execa("ip", ["netns", "exec", netns, process.execPath, "-e", script, host, String(port)], {
    reject: false,
    timeout: 3000,
  });
  return r.exitCode === 0;
}
