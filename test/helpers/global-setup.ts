/**
 * vitest global setup: on a fresh Debian machine, as root, installs the Debian packages the
 * integration tests drive (slapd, ldap-utils, openssh-server/client, rsync, git) if missing, and
 * compiles src/ to dist/ (incremental, about a second when nothing changed): the end-to-end tests
 * run `bin/varco.mjs`, which runs the compiled JavaScript, so they never test a stale build.
 */
import { join } from "node:path";
import { execa } from "execa";
import { ensurePackages, TEST_PACKAGES } from "../../src/demo/demo.ts";
import { ROOT } from "./harness.ts";

export default async function setup(): Promise<void> {
  await execa(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", join(ROOT, "tsconfig.build.json")], {
    cwd: ROOT,
    stdio: "inherit",
  });
  await ensurePackages(true, TEST_PACKAGES);
}
