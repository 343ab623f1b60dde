/** The policy's `state` key and the PostgreSQL URL file: defaults, refusals with a fix, secret-file rules. */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { restartRequired } from "../../src/main.ts";
import { formatIssue, PolicyError, parsePolicyText } from "../../src/policy/index.ts";
import { openState, readStateUrl, redactUrl, StateError } from "../../src/state/index.ts";

const MINIMAL = `version: 1
gateway:
  listen: ["127.0.0.1:2222"]
directory:
  ldap:
    url: ldap://127.0.0.1:389
    bind_dn: cn=varco,dc=example,dc=org
    bind_password_file: secrets/ldap.pw
    user_base: ou=people,dc=example,dc=org
targets:
  vm1:
    host: 10.0.0.1
    host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz"
routes:
  - users: [mario.rossi]
    alias: vm1
    target: vm1
`;

function issues(text: string): string[] {
  try {
    parsePolicyText(text, "/p/gateway.yaml");
  } catch (err) {
    if (err instanceof PolicyError) return err.issues.map(formatIssue);
    throw err;
  }
  return [];
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("policy key state", () => {
  it("defaults to sqlite", () => {
    expect(parsePolicyText(MINIMAL, "/p/gateway.yaml").policy.state).toEqual({ backend: "sqlite" });
  });
  it("postgres needs url_file; unknown backends and keys are refused with the key's path", () => {
    expect(issues(`${MINIMAL}state: { backend: postgres }\n`).join("\n")).toMatch(/state\.url_file.*needs url_file/);
    expect(issues(`${MINIMAL}state: { backend: mysql, url_file: x }\n`).join("\n")).toMatch(/state\.backend/);
    expect(issues(`${MINIMAL}state: { backend: postgres, url: "postgres://u:p@h/db" }\n`).join("\n")).toMatch(/url/);
    expect(issues(`${MINIMAL}state: { backend: postgres, url_file: secrets/pg.url }\n`)).toEqual([]);
  });
  it("a changed state needs a restart (a reload keeps the running one)", () => {
    const a = parsePolicyText(MINIMAL, "/p/gateway.yaml");
    const b = parsePolicyText(`${MINIMAL}state: { backend: postgres, url_file: secrets/pg.url }\n`, "/p/gateway.yaml");
    expect(restartRequired(a, b)).toContain("state");
    expect(restartRequired(a, a)).toEqual([]);
  });
});

describe("the PostgreSQL URL file", () => {
  const dir = mkdtempSync(join(tmpdir(), "varco-pgurl-"));
  dirs.push(dir);
  const file = join(dir, "pg.url");
  it("is a secret: refused when others may read it", () => {
    writeFileSync(file, "postgres://varco:s3cret@db.example/varco?sslmode=verify-full\n", { mode: 0o644 });
    chmodSync(file, 0o644);
    expect(() => readStateUrl(file)).toThrow(/chmod 600/);
    chmodSync(file, 0o600);
    expect(readStateUrl(file)).toBe("postgres://varco:s3cret@db.example/varco?sslmode=verify-full");
  });
  it("must hold a postgres:// URL; the message shows the expected shape, never the content", () => {
    writeFileSync(file, "host=db user=varco password=s3cret\n", { mode: 0o600 });
    let err: unknown;
    try {
      readStateUrl(file);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StateError);
    expect((err as Error).message).toContain("postgres://");
    expect((err as Error).message).not.toContain("s3cret");
  });
  it("redacts the password in every message", () => {
    expect(redactUrl("postgres://varco:s3cret@db.example:5432/varco")).toBe("postgres://varco:***@db.example:5432/varco");
    expect(redactUrl("not a url s3cret")).not.toContain("s3cret");
    // libpq also reads a password from the query string.
    expect(redactUrl("postgres://varco@db.example/varco?password=s3cret&sslmode=verify-full")).not.toContain("s3cret");
    expect(redactUrl("postgres://varco@db.example/varco?sslpassword=s3cret")).not.toContain("s3cret");
  });
  it("an unreachable server is a StateError naming it without the password (no crash, no hang)", async () => {
    writeFileSync(file, "postgres://varco:s3cret@127.0.0.1:1/varco\n", { mode: 0o600 });
    const t0 = Date.now();
    const err = await openState({ stateDir: dir, state: { backend: "postgres", url_file: file }, resolvePath: (p) => p }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StateError);
    expect((err as Error).message).toContain("127.0.0.1:1");
    expect((err as Error).message).not.toContain("s3cret");
    expect(Date.now() - t0).toBeLessThan(10_000);
  });
});
