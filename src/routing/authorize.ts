/**
 * Channel authorisation is one pure function: (route, what the client asks for) → allowed with
 * the `allow` flag that granted it, or refused with a client-safe reason. Used for session
 * requests (shell / exec / subsystem, RFC 4254 §6.5), agent and X11 forwarding (§6.3, OpenSSH
 * PROTOCOL `auth-agent-req@openssh.com`), and port forwarding (direct-tcpip §7.2,
 * tcpip-forward / cancel-tcpip-forward §7.1). Environment variables stay in the SSH server.
 */
import type { PolicyRoute, RouteAllow } from "../policy/index.ts";
import { type ParsedCommand, parseCommand } from "./command.ts";

/** What a client asks for on an authenticated connection. */
export type ChannelRequest =
  | { readonly type: "shell" }
  | { readonly type: "exec"; readonly command: string }
  | { readonly type: "subsystem"; readonly name: string }
  | { readonly type: "direct-tcpip"; readonly host: string; readonly port: number }
  | { readonly type: "tcpip-forward"; readonly bindAddr: string; readonly bindPort: number }
  | { readonly type: "cancel-tcpip-forward"; readonly bindAddr: string; readonly bindPort: number }
  | { readonly type: "auth-agent" }
  | { readonly type: "x11" }
  /** Any other channel type or global request, by its name (always refused). */
  | { readonly type: "unsupported"; readonly name: string };

/** The route's `allow` flag a request needs. */
export type Permission = keyof RouteAllow;

export type ChannelDecision =
  | {
      readonly allow: true;
      readonly permission: Permission;
      /** Set for exec requests: what the command was classified as (drives recording and transfer audit). */
      readonly command?: ParsedCommand;
    }
  | {
      readonly allow: false;
      /** Undefined when no flag could allow it (unknown subsystem, unsupported request). */
      readonly permission: Permission | undefined;
      /** For the audit row: the permission, or `subsystem NAME` / the request name (sanitised). */
      readonly what: string;
      /** Client-safe text without a trailing period, e.g. `exec is not allowed`. */
      readonly reason: string;
      readonly command?: ParsedCommand;
    };

/** A client-chosen name made safe for a terminal and an audit row: control/bidi characters become '?', at most 64 characters. */
function printable(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping control characters is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, "?").slice(0, 64);
}

function flag(route: PolicyRoute, permission: Permission, what: string = permission, command?: ParsedCommand): ChannelDecision {
  const extra = command ? { command } : {};
  if (route.allow[permission]) return { allow: true, permission, ...extra };
  return { allow: false, permission, what, reason: `${what} is not allowed`, ...extra };
}

/** The `allow` flag an exec command needs: legacy scp → `scp`, the sftp-server binary → `sftp`, everything else (rsync and git too) → `exec`. */
export function execPermission(command: ParsedCommand): Permission {
  return command.kind === "scp" ? "scp" : command.kind === "sftp" ? "sftp" : "exec";
}

/**
 * Decides one request against `route.allow`. Pure; never throws.
 * - shell → `shell`; exec → see `execPermission` (the command is parsed by `parseCommand`, so
 *   `scp -f x; sh` needs `exec`); subsystem `sftp` → `sftp`, any other subsystem is refused;
 * - direct-tcpip, tcpip-forward, cancel-tcpip-forward → `port_forwarding` (a port outside
 *   0–65535, or 0 for direct-tcpip, is refused); auth-agent → `agent_forwarding`;
 * - x11 is always refused: the gateway does not implement X11 forwarding, whatever `allow.x11` says.
 */
export function authorizeChannel(route: PolicyRoute, request: ChannelRequest): ChannelDecision {
  const refuse = (permission: Permission | undefined, what: string, reason = `${what} is not allowed`): ChannelDecision => ({
    allow: false,
    permission,
    what,
    reason,
  });
  const validPort = (p: number, zeroOk: boolean) => Number.isInteger(p) && p <= 65535 && (zeroOk ? p >= 0 : p >= 1);
  switch (request.type) {
    case "shell":
      return flag(route, "shell");
    case "exec": {
      const command = parseCommand(request.command);
      const permission = execPermission(command);
      return flag(route, permission, permission, command);
    }
    case "subsystem":
      return request.name === "sftp" ? flag(route, "sftp") : refuse(undefined, `subsystem ${printable(request.name)}`);
    case "direct-tcpip":
      return validPort(request.port, false) && request.host.length > 0
        ? flag(route, "port_forwarding")
        : refuse("port_forwarding", "port_forwarding", "this forwarding request is not valid");
    case "tcpip-forward":
    case "cancel-tcpip-forward":
      return validPort(request.bindPort, true)
        ? flag(route, "port_forwarding")
        : refuse("port_forwarding", "port_forwarding", "this forwarding request is not valid");
    case "auth-agent":
      return flag(route, "agent_forwarding");
    case "x11":
      return refuse("x11", "x11", "x11 forwarding is not supported by this gateway");
    case "unsupported":
      return refuse(undefined, printable(request.name), `${printable(request.name)} is not supported`);
  }
}
