/**
 * A fresh install from a release tarball, as deploy/install.sh does it, into a temporary prefix
 * (VARCO_SYSTEM=0: no packages, users or units are touched on this machine). Production
 * dependencies come from this clone's already built node_modules (VARCO_NODE_MODULES), because
 * tests make no network requests.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT } from "../helpers/harness.ts";

let root: string;
let tarball: string;
const install = (prefix: string) =>
  execa("bash", [join(ROOT, "deploy/install.sh"), tarball], {
    reject: false,
    env: { VARCO_SYSTEM: "0", VARCO_PREFIX: prefix, VARCO_BIN_DIR: join(root, "bin"), VARCO_NODE_MODULES: join(ROOT, "node_modules") },
  });

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "varco-install-"));
  await execa("npm", ["pack", "--silent", "--pack-destination", root], { cwd: ROOT });
  const [name] = readdirSync(root).filter((f) => f.endsWith(".tgz"));
  tarball = join(root, name as string);
}, 120_000);
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("deploy/install.sh from a release tarball", () => {
  it("installs the compiled build with `varco` on PATH, without TypeScript at run time, idempotently", async () => {
    const prefix = join(root, "opt/varco");
    const first = await install(prefix);
    expect(first.stderr).toBe("");
    expect(first.exitCode).toBe(0);
    const version = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version;
    expect(first.stdout).toContain(`varco ${version} is installed in ${prefix}`);
    // The closing hint names commands that work as printed: `varco` is on the PATH given.
    expect(first.stdout).toContain("varco keys init && varco doctor");
    const env = { PATH: `${join(root, "bin")}:${process.env.PATH}` };
    expect((await execa("varco", ["--version"], { env })).stdout.trim()).toBe(version);
    // No TypeScript at run time: no src/, no tsx, no esbuild.
    expect(existsSync(join(prefix, "src"))).toBe(false);
    expect(existsSync(join(prefix, "dist/cli/main.js"))).toBe(true);
    for (const dev of ["tsx", "esbuild", "typescript", "vitest"])
      expect([dev, existsSync(join(prefix, "node_modules", dev))]).toEqual([dev, false]);

    // A first gateway: keys made explicitly, then the doctor runs from the installed build.
    const policy = join(root, "gateway.yaml");
    writeFileSync(
      policy,
      readFileSync(join(prefix, "policies/gateway.yaml"), "utf8").replace("state_dir: /var/lib/varco", `state_dir: ${join(root, "state")}`),
    );
    const keys = await execa("varco", ["--policy", policy, "keys", "init"], { env, reject: false });
    expect(keys.exitCode).toBe(0);
    const doctor = await execa("varco", ["--policy", policy, "doctor", "--json"], { env, reject: false });
    const rows = JSON.parse(doctor.stdout) as Array<{ check: string; ok: boolean }>;
    expect(rows.filter((r) => r.check.endsWith("key")).every((r) => r.ok)).toBe(true);

    // Again: the same result, the release swapped in place.
    const second = await install(prefix);
    expect(second.exitCode).toBe(0);
    expect(existsSync(`${prefix}.new`) || existsSync(`${prefix}.old`)).toBe(false);
    expect((await execa("varco", ["--version"], { env })).stdout.trim()).toBe(version);
  }, 180_000);

  it("refuses a tarball without dist/ and leaves the installed release as it was", async () => {
    const prefix = join(root, "opt/varco2");
    expect((await install(prefix)).exitCode).toBe(0);
    const src = join(root, "src-only");
    await execa("mkdir", ["-p", join(src, "package")]);
    writeFileSync(join(src, "package/package.json"), JSON.stringify({ name: "varco", version: "9.9.9" }));
    const bad = join(root, "bad.tgz");
    await execa("tar", ["-czf", bad, "-C", src, "package"]);
    const r = await execa("bash", [join(ROOT, "deploy/install.sh"), bad], {
      reject: false,
      env: { VARCO_SYSTEM: "0", VARCO_PREFIX: prefix, VARCO_BIN_DIR: join(root, "bin2"), VARCO_NODE_MODULES: join(ROOT, "node_modules") },
    });
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain("has no dist/: not a release tarball");
    expect(existsSync(join(prefix, "dist/cli/main.js"))).toBe(true);
  }, 180_000);
});
