/**
 * The upstream connection (gateway → target) with ssh2's Client: the gateway's own egress key,
 * the target login name from the policy, and the target's host key pinned (RFC 4253 §8: the host
 * key in KEXDH_REPLY must match the pinned blob byte for byte, compared in constant time).
 */
import { createHash, timingSafeEqual } from "node:crypto";
import ssh2 from "ssh2";

const { Client } = ssh2;
type Client = InstanceType<typeof Client>;

/** A pinned OpenSSH public key line parsed into its algorithm and wire blob. */
export interface PinnedHostKey {
  readonly algorithm: string;
  readonly blob: Buffer;
}

/** Thrown when the target presents a host key other than the pinned one. */
export class HostKeyMismatchError extends Error {
  /** SHA256 fingerprint (OpenSSH style) of the key the target presented. */
  readonly presented: string;
  constructor(target: string, presented: string) {
    super(`target ${target} presented host key ${presented}, which does not match the pinned host_key`);
    this.name = "HostKeyMismatchError";
    this.presented = presented;
  }
}

/** Thrown when the target cannot be reached or refuses the gateway's egress key. */
export class UpstreamError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "UpstreamError";
  }
}

/** Parses `"ssh-ed25519 AAAA… comment"`. Throws on a malformed line. */
export function parseHostKeyLine(line: string): PinnedHostKey {
  const [algorithm, b64] = line.trim().split(/\s+/);
  if (!algorithm || !b64) throw new Error("a host key line is '<algorithm> <base64>'");
  const blob = Buffer.from(b64, "base64");
  // The blob starts with its own algorithm name (RFC 4253 §6.6); check it agrees.
  const nameLen = blob.readUInt32BE(0);
  if (blob.subarray(4, 4 + nameLen).toString() !== algorithm) throw new Error("the host key's algorithm does not match its blob");
  return { algorithm, blob };
}

/** OpenSSH-style `SHA256:…` fingerprint of a key blob. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

function hostKeyAlgorithms(algorithm: string): string[] {
  return algorithm === "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : [algorithm];
}

export interface UpstreamParams {
  /** Name of the target in the policy (for messages). */
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly privateKey: Buffer;
  readonly hostKey: PinnedHostKey;
  /** Connect + handshake + auth timeout, ms. */
  readonly timeoutMs: number;
  /** An agent to forward to the target (the user's, relayed), when the route allows it. */
  readonly agent?: ssh2.BaseAgent | undefined;
}

/**
 * Connects and authenticates to a target.
 * @throws HostKeyMismatchError when the host key differs from the pin.
 * @throws UpstreamError when the target is down, times out, or refuses the egress key.
 */
export function connectUpstream(p: UpstreamParams): Promise<Client> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    let mismatch: HostKeyMismatchError | undefined;
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      client.end();
      reject(err);
    };
    client.once("ready", () => {
      settled = true;
      // No Nagle on the upstream either (see the downstream socket).
      client.setNoDelay(true);
      resolve(client);
    });
    // on, not once: ssh2 may emit several errors for one failure (a target that never sends its
    // identification: "Timed out while waiting for handshake", then "Connection lost before
    // handshake"), and an 'error' nobody listens for ends the gateway process. Later ones are the
    // 'close' handlers' business (the session ends with the upstream).
    client.on("error", (err: Error) =>
      fail(mismatch ?? new UpstreamError(`target ${p.name} (${p.host}:${p.port}): ${err.message}`, { cause: err })),
    );
    client.once("close", () => fail(mismatch ?? new UpstreamError(`target ${p.name} (${p.host}:${p.port}) closed the connection`)));
    client.connect({
      host: p.host,
      port: p.port,
      username: p.username,
      privateKey: p.privateKey,
      readyTimeout: p.timeoutMs,
      // The agent is only asked for per channel (exec/shell opts.agentForward), never for the gateway's own login.
      ...(p.agent ? { agent: p.agent } : {}),
      keepaliveInterval: 30_000,
      algorithms: { serverHostKey: hostKeyAlgorithms(p.hostKey.algorithm) as never },
      hostVerifier: (key: Buffer) => {
        const ok = key.length === p.hostKey.blob.length && timingSafeEqual(key, p.hostKey.blob);
        if (!ok) mismatch = new HostKeyMismatchError(p.name, fingerprint(key));
        return ok;
      },
    });
  });
}
