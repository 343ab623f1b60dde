/**
 * The gateway as its systemd unit starts it: the tests and the bench run `varco serve` with the node
 * options of deploy/varco.service, so they exercise the deployed configuration.
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const UNIT = join(dirname(fileURLToPath(import.meta.url)), "../../deploy/varco.service");

/**
 * The node options between `node` and the script of the unit's
 * `ExecStart=/usr/bin/node OPTIONS… /opt/varco/bin/varco.mjs serve` (e.g. `["--single-threaded-gc"]`).
 */
export function serveNodeOptions(unitFile = UNIT): string[] {
  const exec = /^ExecStart=(.*)$/m.exec(readFileSync(unitFile, "utf8"))?.[1]?.trim().split(/\s+/) ?? [];
  const script = exec.findIndex((a) => a.endsWith("varco.mjs"));
  return script > 1 ? exec.slice(1, script) : [];
}
