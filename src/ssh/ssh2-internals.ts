/**
 * Every use varco makes of ssh2's private API, in one place, and the check that varco's patches to
 * ssh2 (patches/ssh2+1.17.0.patch, applied at install by patch-package) are in force.
 *
 * ssh2 is pinned to exactly {@link SSH2_VERSION}: the names below are ssh2 1.17.0 internals, and
 * the patch only applies to that version. The patches (each written to be offered upstream):
 *   - outgoing packets written within one turn of the event loop are coalesced into one writev()
 *     (server.js and client.js cork the socket and uncork it with setImmediate, after every read of
 *     the turn's poll phase);
 *   - outgoing packets of the in-place ciphers (chacha20-poly1305, AES-GCM) are carved out of
 *     256 KiB arenas that are reused once the socket has written them, instead of one new buffer
 *     per packet (protocol/crypto.js);
 *   - random padding (RFC 4253 §6) comes from an 8 KiB CSPRNG pool, not one randomFillSync() per packet;
 *   - on WINDOW_ADJUST (RFC 4254 §5.2) both a channel's stdout and its stderr chunk waiting for window
 *     space are retried, and forgotten once retried (server.js and client.js): upstream retried only
 *     stdout and never cleared it, so stderr written while stdout waited was never sent (a hung
 *     session) and a later waiting stderr chunk resent stale stdout bytes instead;
 *   - extended data (stderr) a peer sends after its EOF is dropped (client.js; RFC 4254 §5.3): ssh2
 *     pushed it after the end of the channel's stderr stream, an 'error' event nobody listens for,
 *     which ended the process (a hostile target could end every session of the gateway).
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { Connection, ServerChannel } from "ssh2";

/** The ssh2 version the internals below and the patch are written for. */
export const SSH2_VERSION = "1.17.0";

/** Thrown at start when the installed ssh2 is not the pinned version or lacks varco's patch. */
export class Ssh2PatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Ssh2PatchError";
  }
}

/** What each patched ssh2 file must contain (a function the patch adds). */
const PATCH_MARKERS: ReadonlyArray<readonly [file: string, marker: string]> = [
  ["lib/protocol/crypto.js", "function fillPadding("],
  ["lib/protocol/crypto.js", "function arenaAlloc("],
  ["lib/protocol/Protocol.js", "this._onWrite = (data, cb) => { onWrite(data, cb); };"],
  ["lib/server.js", "setImmediate(uncorkSocket, socket);"],
  ["lib/client.js", "setImmediate(uncorkSocket, sock);"],
  ["lib/server.js", "function retryWaitingWrites("],
  ["lib/client.js", "function retryWaitingWrites("],
  ["lib/client.js", "No data may follow the peer's EOF"],
];

/** The folder of the ssh2 package this module loads. */
function ssh2Dir(): string {
  return dirname(createRequire(import.meta.url).resolve("ssh2/package.json"));
}

/**
 * Checks that the installed ssh2 is {@link SSH2_VERSION} and carries varco's patch.
 * @throws Ssh2PatchError naming the first file that lacks it (reinstall with `npm ci`, which runs patch-package).
 */
export function assertSsh2Patched(dir: string = ssh2Dir()): void {
  const version = (JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { version?: string }).version;
  if (version !== SSH2_VERSION) throw new Ssh2PatchError(`ssh2 ${version ?? "?"} is installed; varco needs exactly ${SSH2_VERSION}`);
  for (const [file, marker] of PATCH_MARKERS) {
    let text: string;
    try {
      text = readFileSync(join(dir, file), "utf8");
    } catch {
      throw new Ssh2PatchError(`ssh2's ${file} is missing`);
    }
    if (!text.includes(marker)) {
      throw new Ssh2PatchError(`ssh2's ${file} lacks varco's patch (patches/ssh2+${SSH2_VERSION}.patch): run npm ci`);
    }
  }
}

/** ssh2 internals of a server-side channel needed to send exit information after EOF. */
interface ServerChannelInternals {
  readonly outgoing: { id: number; state: string };
  readonly _client: {
    _protocol: {
      exitStatus(id: number, status: number): void;
      exitSignal(id: number, name: string, coreDumped: boolean, msg: string): void;
    };
  };
}

/** The state of a downstream channel's sending side (ssh2 `outgoing.state`: open, eof, closing, closed). */
export function outgoingState(channel: ServerChannel): string {
  return (channel as unknown as ServerChannelInternals).outgoing.state;
}

/**
 * Sends `exit-status` (RFC 4254 §6.10) on a channel, also after EOF: ssh2's public `exit()`
 * only works while the channel is open, but the order scp relies on is data, EOF, exit-status, CLOSE.
 */
export function sendExitStatus(channel: ServerChannel, code: number): void {
  const ch = channel as unknown as ServerChannelInternals;
  ch._client._protocol.exitStatus(ch.outgoing.id, code);
}

/** Sends `exit-signal` (RFC 4254 §6.10) on a channel, also after EOF; `signal` without "SIG". */
export function sendExitSignal(channel: ServerChannel, signal: string, coreDumped: boolean, message: string): void {
  const ch = channel as unknown as ServerChannelInternals;
  ch._client._protocol.exitSignal(ch.outgoing.id, signal, coreDumped, message);
}

/** The TCP socket under a downstream connection (ssh2 `Connection._sock`), if still there. */
export function connectionSocket(client: Connection): { destroy(): void; localAddress?: string; localPort?: number } | undefined {
  return (client as unknown as { _sock?: { destroy(): void; localAddress?: string; localPort?: number } })._sock;
}

/** The channel a session request accepted (ssh2 keeps it in `session._channel` after exec/shell/subsystem). */
export function acceptedChannel(session: unknown): ServerChannel | undefined {
  return (session as { _channel?: ServerChannel })._channel;
}

/**
 * Opens an `auth-agent@openssh.com` channel towards the user (OpenSSH PROTOCOL §4.1), which
 * ssh2's server side does not expose: `id` is the local channel id, window and packet in bytes.
 */
export function openAgentChannel(client: Connection, id: number, window: number, packetSize: number): void {
  (
    client as unknown as { _protocol: { openssh_authAgent(chan: number, initWindow: number, maxPacket: number): void } }
  )._protocol.openssh_authAgent(id, window, packetSize);
}

/**
 * Reserves a local channel id in ssh2's channel manager for a channel the server opens itself
 * (ssh2 calls `wrapper(err, stream)` when the peer confirms or refuses it); -1 when none is free.
 */
export function reserveChannel(client: Connection, wrapper: (err: Error | undefined, stream: ServerChannel) => void): number {
  return (client as unknown as { _chanMgr: { add(w: unknown): number } })._chanMgr.add(wrapper);
}
