/**
 * `varco user ssh-config UID [--gateway HOST[:PORT]]`: ready-to-paste `~/.ssh/config` blocks, one
 * `Host` per alias the user may reach, with connection sharing so that one login (password and
 * code) serves every later `ssh`, `scp`, `rsync` and `git` to that alias for a while (ssh_config(5):
 * ControlMaster, ControlPath, ControlPersist), and the gateway's host key line for `known_hosts`
 * (sshd(8) SSH_KNOWN_HOSTS FILE FORMAT).
 */
import type { Command } from "commander";
import { printable } from "../obs/printable.ts";
import { parseHostPort } from "../policy/units.ts";
import { parseGatewayAddress, renderSshConfig } from "../routing/ssh-config.ts";
import { ExitError, loadOrExit, policyPath } from "./common.ts";

export { CONTROL_PERSIST, renderSshConfig, type SshConfigInput } from "../routing/ssh-config.ts";

/** Adds `ssh-config` to the `user` command group. */
export function registerSshConfig(
  user: Command,
  program: Command,
  resolveUid: (loaded: ReturnType<typeof loadOrExit>, typed: string) => Promise<string>,
): void {
  user
    .command("ssh-config <uid>")
    .description("print ~/.ssh/config blocks (one Host per alias, with connection sharing) and the gateway's known_hosts line")
    .option("--gateway <host[:port]>", "how users reach the gateway (default: the first gateway.listen address)")
    .action(async (typed: string, opts: { gateway?: string }) => {
      const [{ directoryForPolicy }, { routesFor }, { readFileSync }] = await Promise.all([
        import("../main.ts"),
        import("../routing/route.ts"),
        import("node:fs"),
      ]);
      const loaded = loadOrExit(policyPath(program.opts()));
      const uid = await resolveUid(loaded, typed);
      const local = loaded.policy.directory.local_users.find((u) => u.uid === uid);
      let groups: readonly string[] = local?.groups ?? [];
      if (!local && loaded.policy.directory.ldap) {
        const v = await directoryForPolicy(loaded)
          ?.lookup(uid)
          .catch(() => undefined);
        if (v?.kind === "ok") groups = v.groups;
        else console.error(`varco: ${uid}'s groups could not be read from the directory; only routes naming ${uid} are listed`);
      }
      const routes = routesFor(loaded.policy, { uid, groups });
      if (routes.length === 0) throw new ExitError(`${uid} may use no route in ${loaded.file}`, 1);
      const listen =
        opts.gateway !== undefined ? parseGatewayAddress(opts.gateway) : parseHostPort(loaded.policy.gateway.listen[0] ?? "", 22);
      if (!listen) throw new ExitError(`--gateway: "${printable(opts.gateway ?? "")}" is not HOST[:PORT]`, 2);
      const host = listen.host === "0.0.0.0" || listen.host === "::" ? "GATEWAY" : listen.host;
      const hostKeys = loaded.policy.gateway.host_keys.flatMap((k) => {
        try {
          return [
            readFileSync(`${loaded.resolvePath(k)}.pub`, "utf8")
              .trim()
              .split(/\s+/)
              .slice(0, 2)
              .join(" "),
          ];
        } catch {
          return [];
        }
      });
      process.stdout.write(renderSshConfig({ uid, routes, host, port: listen.port, hostKeys }));
    });
}
