/** Private files refused when others could change or read them (real files, real chmod/chown). */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { assertPrivateFiles, checkPrivateFiles, PrivateFileError } from "../../src/policy/index.ts";

const isRoot = process.getuid?.() === 0;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
/** A temp dir (0700) with a policy file and a totp.key of the given modes. */
function setup(policyMode: number, keyMode?: number): { dir: string; policyFile: string; totpKeyFile: string } {
  const dir = mkdtempSync(join(tmpdir(), "varco-perm-"));
  dirs.push(dir);
  const policyFile = join(dir, "gateway.yaml");
  writeFileSync(policyFile, "version: 1\n");
  chmodSync(policyFile, policyMode);
  const totpKeyFile = join(dir, "totp.key");
  if (keyMode !== undefined) {
    writeFileSync(totpKeyFile, Buffer.alloc(32));
    chmodSync(totpKeyFile, keyMode);
  }
  return { dir, policyFile, totpKeyFile };
}

describe("checkPrivateFiles", () => {
  it("accepts 0600/0640/0644/0400 policies and a 0600/0400 key, and a key not created yet", () => {
    for (const m of [0o600, 0o640, 0o644, 0o400, 0o444])
      expect(checkPrivateFiles({ policyFile: setup(m, 0o600).policyFile }), m.toString(8)).toEqual([]);
    for (const m of [0o600, 0o400]) {
      const f = setup(0o640, m);
      expect(checkPrivateFiles(f), m.toString(8)).toEqual([]);
    }
    const absent = setup(0o640);
    expect(checkPrivateFiles(absent)).toEqual([]);
  });

  it("refuses a policy writable by group or others, naming file, mode and fix", () => {
    for (const m of [0o660, 0o662, 0o602, 0o620, 0o666, 0o777]) {
      const f = setup(m);
      const problems = checkPrivateFiles({ policyFile: f.policyFile });
      expect(problems, m.toString(8)).toHaveLength(1);
      expect(problems[0]).toContain(f.policyFile);
      expect(problems[0]).toContain(`mode 0${m.toString(8)}`);
      expect(problems[0]).toContain(`chmod 0640 ${f.policyFile}`);
    }
  });

  it("refuses a web console TLS key with any group or other bit, or missing; accepts 0600/0400", () => {
    const f = setup(0o640);
    const key = join(f.dir, "web.key");
    expect(checkPrivateFiles({ policyFile: f.policyFile, webTlsKeyFile: key })[0]).toContain(`${key}: cannot be inspected (ENOENT)`);
    writeFileSync(key, "-----BEGIN PRIVATE KEY-----\n");
    for (const m of [0o600, 0o400]) {
      chmodSync(key, m);
      expect(checkPrivateFiles({ policyFile: f.policyFile, webTlsKeyFile: key }), m.toString(8)).toEqual([]);
    }
    for (const m of [0o640, 0o644, 0o604, 0o660]) {
      chmodSync(key, m);
      const problems = checkPrivateFiles({ policyFile: f.policyFile, webTlsKeyFile: key });
      expect(problems, m.toString(8)).toHaveLength(1);
      expect(problems[0]).toContain(`mode 0${m.toString(8)}`);
      expect(problems[0]).toContain(`chmod 0600 ${key}`);
    }
  });

  it("refuses a totp.key with any group or other bit", () => {
    for (const m of [0o640, 0o604, 0o610, 0o601, 0o620, 0o602, 0o644, 0o666]) {
      const f = setup(0o600, m);
      const problems = checkPrivateFiles(f);
      expect(problems, m.toString(8)).toHaveLength(1);
      expect(problems[0]).toContain(f.totpKeyFile);
      expect(problems[0]).toContain(`mode 0${m.toString(8)}`);
      expect(problems[0]).toContain(`chmod 0600 ${f.totpKeyFile}`);
    }
  });

  it("reports both files at once, and assertPrivateFiles throws a PrivateFileError with both", () => {
    const f = setup(0o666, 0o644);
    expect(checkPrivateFiles(f)).toHaveLength(2);
    expect(() => assertPrivateFiles(f)).toThrow(PrivateFileError);
    try {
      assertPrivateFiles(f);
    } catch (err) {
      expect((err as PrivateFileError).problems).toHaveLength(2);
    }
    expect(() => assertPrivateFiles(setup(0o640, 0o600))).not.toThrow();
  });

  it("checks the real file behind a symlink, not the link", () => {
    const f = setup(0o666, 0o644);
    const link = join(f.dir, "link.yaml");
    symlinkSync(f.policyFile, link);
    const keyLink = join(f.dir, "key-link");
    symlinkSync(f.totpKeyFile, keyLink);
    expect(checkPrivateFiles({ policyFile: link, totpKeyFile: keyLink })).toHaveLength(2);
    chmodSync(f.policyFile, 0o640);
    chmodSync(f.totpKeyFile, 0o600);
    expect(checkPrivateFiles({ policyFile: link, totpKeyFile: keyLink })).toEqual([]);
  });

  it("refuses a missing policy, a directory, and a totp.key link to nowhere", () => {
    const f = setup(0o640);
    expect(checkPrivateFiles({ policyFile: join(f.dir, "nope.yaml") })[0]).toContain("ENOENT");
    expect(checkPrivateFiles({ policyFile: f.dir })[0]).toContain("not a regular file");
    // An absent key is fine (varco creates it 0600), a link to nowhere is not (the create would fail or land elsewhere).
    symlinkSync(join(f.dir, "elsewhere"), join(f.dir, "dangling"));
    const problems = checkPrivateFiles({ policyFile: f.policyFile, totpKeyFile: join(f.dir, "dangling") });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain("ENOENT");
  });

  it("refuses a file in a group/world-writable directory unless the directory is sticky", () => {
    const f = setup(0o640, 0o600);
    const sub = join(f.dir, "etc");
    mkdirSync(sub);
    const policyFile = join(sub, "gateway.yaml");
    writeFileSync(policyFile, "version: 1\n", { mode: 0o640 });
    chmodSync(sub, 0o777);
    const problems = checkPrivateFiles({ policyFile });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain(`chmod go-w ${sub}`);
    chmodSync(sub, 0o1777);
    expect(checkPrivateFiles({ policyFile })).toEqual([]);
    chmodSync(sub, 0o750);
    expect(checkPrivateFiles({ policyFile })).toEqual([]);
  });

  it.skipIf(!isRoot)("refuses a file owned by another user (who could chmod it later)", () => {
    const f = setup(0o640, 0o600);
    chownSync(f.policyFile, 65534, 65534);
    chownSync(f.totpKeyFile, 65534, 65534);
    const problems = checkPrivateFiles(f);
    expect(problems).toHaveLength(2);
    expect(problems[0]).toContain("owned by uid 65534");
    expect(problems[0]).toContain(`chown root ${f.policyFile}`);
  });
});
