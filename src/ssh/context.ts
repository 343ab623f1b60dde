/**
 * What channel handlers see of one routed downstream connection.
 */
import type { Connection, Client as UpstreamClient } from "ssh2";
import type { AuditSink } from "../audit/index.ts";
import type { AuthenticatedIdentity } from "../auth/index.ts";
import type { Logger } from "../obs/index.ts";
import type { ApprovedTarget, RouteDecision } from "../routing/index.ts";
import type { ConnectionEvent } from "./events.ts";
import type { Monitor } from "./monitor.ts";
import type { ByteCounter } from "./relay.ts";

export interface ConnectionContext {
  readonly client: Connection;
  readonly connId: string;
  /** The SSH user name as typed (at most 256 bytes). */
  readonly account: string;
  readonly identity: AuthenticatedIdentity;
  /** The routing decision made at login. */
  readonly decision: RouteDecision;
  readonly audit: AuditSink;
  readonly recordingsDir: () => string;
  readonly now: () => number;
  readonly emit: (e: ConnectionEvent) => void;
  readonly monitor: Monitor;
  /** Counts bytes for the session totals and marks activity. */
  readonly count: ByteCounter;
  /** The upstream connection (only when the route was approved). */
  readonly upstream: Promise<UpstreamClient> | undefined;
  upstreamClient(): UpstreamClient | undefined;
  /** Ends the connection, telling the user why on `channel` stderr when given. */
  terminate(reason: string): void;
  /** The last exit status a session channel reported. */
  setExit(code: number): void;
  /** The next channel number for recordings (1, 2, …). */
  nextChannel(): number;
  /**
   * Registers the end of a session channel (its relay done, its recording closed, `channel_closed`
   * emitted): the session's `session_end` is written once every registered one has settled, so it
   * is the session's last event (bounded: {@link import("./connection.ts").CHANNELS_END_WAIT_MS}).
   */
  channelEnding(done: Promise<unknown>): void;
  readonly log: Logger;
  /** Whether the user asked for agent forwarding on some session channel. */
  agentRequested: boolean;
}

/** The approved target, if the decision was approved. */
export function approvedOf(ctx: ConnectionContext): ApprovedTarget | undefined {
  return ctx.decision.kind === "approved" ? ctx.decision.approved : undefined;
}
