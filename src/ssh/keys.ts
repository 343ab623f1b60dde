/**
 * Host keys and the egress key: loaded from disk; generated (ed25519, mode 0600) only when asked
 * (`varco keys init`, the demo), never silently by the gateway.
 */
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import ssh2 from "ssh2";

const { utils } = ssh2;

/** Thrown when a key file is unusable; the message names the file and the fix, never the key. */
export class KeyFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KeyFileError";
  }
}

/**
 * A new ed25519 pair in OpenSSH format that ssh2 itself can read back. ssh2's generator drops the
 * leading zero bytes of a public key that starts with 0x00 (about 1 key in 256), producing a key
 * its own parser rejects (mscdex/ssh2#1513): such a pair is thrown away and another one made.
 */
export function generateEd25519(comment: string): { private: string; public: string } {
  for (let i = 0; i < 16; i++) {
    const pair = utils.generateKeyPairSync("ed25519", { comment });
    if (!(utils.parseKey(pair.private) instanceof Error) && !(utils.parseKey(pair.public) instanceof Error)) return pair;
  }
  throw new KeyFileError("could not generate a readable ed25519 key pair (16 attempts)");
}

/**
 * Creates an ed25519 pair (`file`, mode 0600, and `file.pub`) unless `file` exists.
 * Returns true when it created one. @throws KeyFileError when it cannot be generated.
 */
export function createKeyIfMissing(file: string, comment: string): boolean {
  if (existsSync(file)) return false;
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const pair = generateEd25519(comment);
  writeFileSync(file, pair.private, { mode: 0o600, flag: "wx" });
  writeFileSync(`${file}.pub`, `${pair.public}\n`, { mode: 0o644 });
  return true;
}

/**
 * Returns the private key at `file`, generating an ed25519 pair (`file` and `file.pub`) if missing.
 * @throws KeyFileError when the file is readable by group/others or does not parse.
 */
export function loadOrCreateKey(file: string, comment: string): Buffer {
  createKeyIfMissing(file, comment);
  return loadKey(file);
}

/**
 * Returns the private key at `file` (`what` names the policy key for the message).
 * @throws KeyFileError when it is missing (naming `varco keys init`), readable by group/others or does not parse.
 */
export function loadKey(file: string, what = "key"): Buffer {
  if (!existsSync(file)) throw new KeyFileError(`${what} ${file} does not exist: create the keys with \`varco keys init\``);
  if ((statSync(file).mode & 0o077) !== 0) {
    throw new KeyFileError(`${file} is readable by group or others; run: chmod 600 ${file}`);
  }
  const key = readFileSync(file);
  const parsed = utils.parseKey(key);
  if (parsed instanceof Error) throw new KeyFileError(`${file} is not a private key ssh2 can read: ${parsed.message}`);
  return key;
}

/** The OpenSSH public key line (`ssh-ed25519 AAAA… comment`) for a private key. */
export function publicKeyLine(privateKey: Buffer, comment = ""): string {
  const parsed = utils.parseKey(privateKey);
  if (parsed instanceof Error) throw new KeyFileError(parsed.message);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  return `${key.type} ${key.getPublicSSH().toString("base64")}${comment ? ` ${comment}` : ""}`;
}
