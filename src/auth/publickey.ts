/**
 * User public keys for the `publickey` factor (RFC 4252 §7): from the directory attribute
 * (openssh-lpk sshPublicKey) and/or a keys file per user. Matching is by the key blob, compared in
 * constant time; the signature is verified with ssh2's key parser.
 */
import { timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import ssh2 from "ssh2";

const { utils } = ssh2;

/** Parses authorized_keys-style lines; malformed lines are skipped. */
export function parseAuthorizedKeys(lines: readonly string[]): Array<ReturnType<typeof utils.parseKey> & object> {
  const out: Array<ReturnType<typeof utils.parseKey> & object> = [];
  for (const raw of lines.flatMap((l) => l.split("\n"))) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const parsed = utils.parseKey(line);
    if (parsed instanceof Error) continue;
    out.push(Array.isArray(parsed) ? parsed[0] : parsed);
  }
  return out;
}

/** Safe `{uid}` substitution into a keys-file path: refuses uids that could escape the folder. */
export function keysFilePath(template: string, uid: string): string | undefined {
  if (!/^[A-Za-z0-9._@-]+$/.test(uid) || uid.includes("..")) return undefined;
  return template.replaceAll("{uid}", uid);
}

export function readKeysFile(path: string | undefined): string[] {
  if (!path) return [];
  try {
    return [readFileSync(path, "utf8")];
  } catch {
    return [];
  }
}

/** Finds the authorized key whose public blob equals `blob`. */
export function findKey(keys: ReturnType<typeof parseAuthorizedKeys>, algo: string, blob: Buffer) {
  return keys.find((k) => {
    if (k instanceof Error) return false;
    const pub = k.getPublicSSH();
    return (
      pub.length === blob.length && timingSafeEqual(pub, blob) && (k.type === algo || algo.startsWith("rsa-sha2") || algo === "ssh-rsa")
    );
  });
}
