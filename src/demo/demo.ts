/**
 * `varco demo`: installs what is missing (as root, Debian packages), starts the demo environment
 * and the gateway on 127.0.0.1:2222, prints what to type, and cleans up on Ctrl-C.
 */
import { existsSync, openSync } from "node:fs";
import { resolve } from "node:path";
import { execa } from "execa";
import { currentCode } from "../auth/index.ts";
import { runGateway } from "../main.ts";
import { createLogger } from "../obs/index.ts";
import { DEMO_TOTP, startDemoEnvironment } from "./environment.ts";

/** What the demo needs: a file each Debian package installs, and the package. */
export const DEMO_PACKAGES: ReadonlyArray<{ file: string; pkg: string }> = [
  { file: "/usr/sbin/slapd", pkg: "slapd" },
  { file: "/usr/bin/ldapsearch", pkg: "ldap-utils" },
  { file: "/usr/sbin/sshd", pkg: "openssh-server" },
  { file: "/usr/bin/ssh", pkg: "openssh-client" },
];

/** What the tests need on top: the clients they drive. */
export const TEST_PACKAGES: ReadonlyArray<{ file: string; pkg: string }> = [
  ...DEMO_PACKAGES,
  { file: "/usr/bin/rsync", pkg: "rsync" },
  { file: "/usr/bin/git", pkg: "git" },
  { file: "/usr/bin/asciinema", pkg: "asciinema" },
  { file: "/usr/bin/sqlite3", pkg: "sqlite3" },
  { file: "/usr/bin/script", pkg: "bsdutils" },
  { file: "/usr/bin/pgrep", pkg: "procps" },
  { file: "/usr/bin/openssl", pkg: "openssl" },
  { file: "/usr/sbin/nft", pkg: "nftables" },
  { file: "/usr/sbin/keepalived", pkg: "keepalived" },
];

/** Installs missing Debian packages when running as root; otherwise says what to install. */
export async function ensurePackages(install: boolean, required = DEMO_PACKAGES): Promise<void> {
  const missing = required.filter((r) => !existsSync(r.file)).map((r) => r.pkg);
  if (missing.length === 0) return;
  if (!install || process.getuid?.() !== 0) {
    throw new Error(`missing Debian packages: ${missing.join(" ")}; install them with: apt-get install -y ${missing.join(" ")}`);
  }
  console.log(`installing ${missing.join(" ")} …`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  await execa("apt-get", ["update", "-q"], { env, stdio: "inherit" });
  await execa("apt-get", ["install", "-y", "-q", ...missing], { env, stdio: "inherit" });
}

export async function runDemo(o: { port: number; install: boolean }): Promise<void> {
  await ensurePackages(o.install);
  const dir = resolve(".demo");
  const env = await startDemoEnvironment({ dir, gatewayPort: o.port });
  const logFile = resolve(dir, "gateway.log");
  const logger = createLogger({ destination: openSync(logFile, "a", 0o600) });
  let running: Awaited<ReturnType<typeof runGateway>>;
  try {
    running = await runGateway(env.policyFile, logger);
  } catch (err) {
    await env.stop();
    throw err;
  }
  const [mario, anna] = env.users;
  const code = (uid: string) => currentCode(DEMO_TOTP, env.secrets.get(uid) ?? "", Date.now());
  console.log(`
varco demo is running (gateway log: ${logFile}).

  Log in as Mario to his VM (password, then the verification code):
    ssh -p ${o.port} -o UserKnownHostsFile=/dev/null mario.rossi_vm1@127.0.0.1
    Password: ${mario?.password}
  Anna:    ssh -p ${o.port} anna.bianchi_vm2@127.0.0.1        (password ${anna?.password})
  Shared:  ssh -p ${o.port} mario.rossi_shared@127.0.0.1      (route given to the astro group)
  Refused: ssh -p ${o.port} mario.rossi_vm2@127.0.0.1         (lists Mario's aliases)

  TOTP secrets (add them to an authenticator app, or read the codes printed below):
    mario.rossi   ${env.secrets.get("mario.rossi")}
    anna.bianchi  ${env.secrets.get("anna.bianchi")}
  A code is single use: wait for the next one before logging in again as the same user.

  Audit:   npx varco --policy ${env.policyFile} audit list
  Ctrl-C stops the gateway, slapd and the targets and removes ${dir}.
`);
  const tick = () =>
    console.log(
      `${new Date().toISOString().slice(11, 19)}  codes now: mario.rossi ${code("mario.rossi")}   anna.bianchi ${code("anna.bianchi")}`,
    );
  tick();
  const period = 30_000;
  let timer = setTimeout(
    function again() {
      tick();
      timer = setTimeout(again, period - (Date.now() % period) + 50);
    },
    period - (Date.now() % period) + 50,
  );
  await new Promise<void>((done) => {
    process.once("SIGINT", () => done());
    process.once("SIGTERM", () => done());
  });
  clearTimeout(timer);
  console.log("\nstopping the demo …");
  await running.stop(0);
  logger.flush();
  await env.stop();
  console.log("stopped; everything the demo started is gone.");
}
