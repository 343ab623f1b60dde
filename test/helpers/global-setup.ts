/**
 * vitest global setup: on a fresh Debian machine, as root, installs the Debian packages the
 * integration tests drive (slapd, ldap-utils, openssh-server/client, rsync, git) if missing.
 */
import { ensurePackages, TEST_PACKAGES } from "../../src/demo/demo.ts";

export default async function setup(): Promise<void> {
  await ensurePackages(true, TEST_PACKAGES);
}
