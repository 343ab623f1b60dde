/**
 * `varco keys scan`: fetch a target's host keys (one handshake per key type, RFC 4253 §7) without
 * authenticating, to pin them in the policy. Like ssh-keyscan, it trusts the network at scan time:
 * compare the fingerprints with the VM's console (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`).
 */
import ssh2 from "ssh2";
import { fingerprint } from "./upstream.ts";

export interface ScannedKey {
  readonly algorithm: string;
  /** `ssh-ed25519 AAAA…`, ready for the policy's host_key. */
  readonly line: string;
  readonly fingerprint: string;
}

const TYPES = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsa-sha2-512"] as const;

function keyName(blob: Buffer): string {
  return blob.subarray(4, 4 + blob.readUInt32BE(0)).toString();
}

/** One handshake offering only `algorithm`; resolves with the key or undefined when the target has none of that type. */
function scanOne(host: string, port: number, algorithm: string, timeoutMs: number): Promise<ScannedKey | undefined> {
  return new Promise((resolve, reject) => {
    const c = new ssh2.Client();
    let found: ScannedKey | undefined;
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      c.end();
      if (found || !err || /no matching|handshake failed|algorithm/i.test(err.message)) resolve(found);
      else reject(err);
    };
    c.on("error", (err) => finish(err));
    c.on("close", () => finish());
    c.on("ready", () => finish());
    c.connect({
      host,
      port,
      username: "varco-keyscan",
      readyTimeout: timeoutMs,
      algorithms: { serverHostKey: [algorithm] as never },
      authHandler: () => false,
      hostVerifier: (key: Buffer) => {
        const name = keyName(key);
        found = { algorithm: name, line: `${name} ${key.toString("base64")}`, fingerprint: fingerprint(key) };
        // Refuse the connection: we only wanted the key.
        setImmediate(() => finish());
        return false;
      },
    } as ssh2.ConnectConfig);
  });
}

/**
 * Every host key type the target offers.
 * @throws Error when the target cannot be reached at all.
 */
export async function scanHostKeys(host: string, port = 22, timeoutMs = 5000): Promise<ScannedKey[]> {
  const out: ScannedKey[] = [];
  for (const t of TYPES) {
    const k = await scanOne(host, port, t, timeoutMs);
    if (k && !out.some((o) => o.line === k.line)) out.push(k);
  }
  return out;
}
