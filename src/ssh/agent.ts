/**
 * SSH agent forwarding through the gateway (draft-miller-ssh-agent, OpenSSH PROTOCOL
 * "auth-agent@openssh.com"): when a program on the target uses the forwarded agent, the upstream
 * client asks this agent for a stream; it opens an `auth-agent@openssh.com` channel back to the
 * user's client, which answers from the user's own agent. Keys never leave the user's machine.
 */

import type { Connection, ServerChannel } from "ssh2";
import ssh2 from "ssh2";
import { openAgentChannel, reserveChannel } from "./ssh2-internals.ts";

const MAX_WINDOW = 2 * 1024 * 1024;
const PACKET_SIZE = 32 * 1024;

/** Opens an `auth-agent@openssh.com` channel to the downstream client. */
export function openDownstreamAgent(client: Connection): Promise<ServerChannel> {
  return new Promise((resolve, reject) => {
    const wrapper = Object.assign((err: Error | undefined, stream: ServerChannel) => (err ? reject(err) : resolve(stream)), {
      type: "auth-agent@openssh.com",
    });
    const id = reserveChannel(client, wrapper);
    if (id === -1) return reject(new Error("no free channels"));
    openAgentChannel(client, id, MAX_WINDOW, PACKET_SIZE);
  });
}

/**
 * An ssh2 agent for the upstream connection that relays to the user's agent. `enabled()` is
 * checked at each use: only a session whose user asked for agent forwarding (ssh -A) on a route
 * that allows it gets one.
 */
export function relayAgent(client: Connection, enabled: () => boolean): ssh2.BaseAgent {
  const agent = new (class extends ssh2.BaseAgent {
    getIdentities(cb: (err: Error | undefined, keys?: ssh2.ParsedKey[]) => void): void {
      cb(undefined, []);
    }
    sign(_pub: ssh2.ParsedKey | Buffer | string, _data: Buffer, _o: unknown, cb?: (err?: Error) => void): void {
      cb?.(new Error("the gateway's relay agent does not sign for the gateway"));
    }
  })();
  // Called by ssh2's client when the target opens an auth-agent@openssh.com channel.
  (agent as unknown as { getStream: (cb: (err: Error | undefined, stream?: ServerChannel) => void) => void }).getStream = (cb) => {
    if (!enabled()) return cb(new Error("agent forwarding was not requested or is not allowed"));
    openDownstreamAgent(client).then(
      (s) => cb(undefined, s),
      (err: Error) => cb(err),
    );
  };
  return agent;
}
