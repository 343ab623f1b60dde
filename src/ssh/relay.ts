/**
 * Relaying one SSH session channel between downstream (user ↔ gateway) and upstream
 * (gateway ↔ target), RFC 4254 §5–6. The channel proxy knows nothing about users or routes.
 *
 * Ordering towards the client (what scp, rsync and git rely on): every byte of stdout and stderr,
 * then EOF, then `exit-status`/`exit-signal`, then CLOSE (RFC 4254 §5.3, §6.10).
 * Backpressure both ways: a `write()` that returns false pauses the source until `drain`, so a
 * fast sender never fills the gateway's memory; ssh2 stops adjusting the SSH window of a paused
 * channel, which in turn stops the peer.
 */
import type { Duplex, Readable, Writable } from "node:stream";
import type { ClientChannel, ServerChannel } from "ssh2";
import type { Tap } from "../audit/index.ts";
import { outgoingState, sendExitSignal, sendExitStatus } from "./ssh2-internals.ts";

/** How the upstream process ended, as sent by the target. */
export type ExitInfo =
  | { readonly kind: "status"; readonly code: number }
  | { readonly kind: "signal"; readonly signal: string; readonly coreDumped: boolean; readonly message: string };

/** Direction of relayed bytes: `up` = user → target, `down` = target → user. */
export type Direction = "up" | "down";

/** Called for every relayed chunk with its size in bytes. */
export type ByteCounter = (direction: Direction, bytes: number) => void;

/**
 * Copies `from` into `to` with backpressure and counts bytes. Resolves once `from` has ended and
 * every chunk written has been handed to `to`'s transport (its write callback ran). Does not end `to`.
 * The SSH packets written within one turn of the event loop leave in one socket write (ssh2 patch, see ssh2-internals.ts).
 */
export function pump(from: Readable, to: Writable, count: (n: number) => void, tap?: Tap): Promise<void> {
  return new Promise((resolve) => {
    let done = false;
    const settle = () => {
      if (done) return;
      done = true;
      to.off("drain", onDrain);
      resolve();
    };
    // Two things may ask for a pause (the destination's buffer, the tap's bounded buffer); resume when both are clear.
    let toFull = false;
    let tapFull = false;
    const maybeResume = () => {
      if (!toFull && !tapFull) from.resume();
    };
    const onDrain = () => {
      toFull = false;
      maybeResume();
    };
    to.on("drain", onDrain);
    const onData = (chunk: Buffer) => {
      // The destination ended meanwhile (ssh2 ends a channel's stderr on the user's CHANNEL_CLOSE, which
      // can come in the same packet burst as the window adjust that resumed this source): a write
      // after end would be an 'error' event nobody hears, which ends the process. Discard.
      if (to.writableEnded || to.destroyed) return;
      count(chunk.length);
      if (!to.write(chunk)) {
        toFull = true;
        from.pause();
      }
      if (tap && !tap.write(chunk)) {
        tapFull = true;
        from.pause();
        tap.onDrain(() => {
          tapFull = false;
          maybeResume();
        });
      }
    };
    from.on("data", onData);
    // Only "end" counts: it comes after every buffered chunk was read ("close" may come earlier).
    // Then an empty write is a barrier: a Writable runs writes in order, so its callback fires once
    // every earlier chunk has been handed to the transport (for ssh2: sent within the peer's window).
    from.once("end", () => {
      if (to.writableEnded || to.destroyed) return settle();
      to.write(Buffer.alloc(0), () => settle());
    });
    // A destination that goes away will never call back or drain: release the waiter, and let the
    // source run to its end discarding what is left. A source left paused never emits 'end', and
    // ssh2 emits a channel's 'close' only after its 'end' (lib/utils.js onCHANNEL_CLOSE), so the
    // upstream channel would never close and the session's recording never be closed.
    to.once("close", () => {
      settle();
      from.off("data", onData);
      from.resume();
    });
  });
}

/**
 * Relays a forwarded TCP channel (direct-tcpip or forwarded-tcpip, RFC 4254 §7) both ways:
 * `down` is the user's side, `up` the target's; EOF and CLOSE pass on in each direction.
 */
export function relayStream(down: Duplex & { close(): void }, up: Duplex & { close(): void }, count: ByteCounter): void {
  void pump(down, up, (n) => count("up", n)).then(() => up.end());
  void pump(up, down, (n) => count("down", n)).then(() => down.end());
  down.once("close", () => up.close());
  up.once("close", () => down.close());
}

/**
 * Writes `text` to a downstream channel's stderr, then calls `done` (once written; at once when the
 * user already closed the channel: ssh2 ends its stderr on CHANNEL_CLOSE, and a write after that is
 * an 'error' event nobody hears, which would end the process).
 */
export function writeStderr(ch: ServerChannel, text: string, done?: () => void): void {
  if (ch.stderr.writableEnded || ch.stderr.destroyed) {
    done?.();
    return;
  }
  ch.stderr.write(text, () => done?.());
}

/** Sends EOF, then the exit information, then CLOSE on a downstream channel. */
export function finishDownstream(down: ServerChannel, exit: ExitInfo | undefined): void {
  const state = outgoingState(down);
  if (state !== "open" && state !== "eof") return;
  down.eof();
  if (exit) {
    if (exit.kind === "status") sendExitStatus(down, exit.code);
    else sendExitSignal(down, exit.signal.replace(/^SIG/, ""), exit.coreDumped, exit.message);
  }
  down.close();
}

/**
 * Starts listening for the upstream channel's `exit-status`/`exit-signal` (RFC 4254 §6.10); returns
 * what arrived so far. Call it in the callback that hands over the channel, before any `await` or
 * promise continuation: a target may send CHANNEL_SUCCESS, the output, EOF, the exit status and
 * CLOSE in one TCP segment, and ssh2 emits `exit` in the same synchronous parse that calls back.
 * The output and EOF wait in the channel's stream buffer; an `exit` nobody listened for is gone.
 */
export function watchExit(up: ClientChannel): () => ExitInfo | undefined {
  let exit: ExitInfo | undefined;
  up.on("exit", (code: number | null, signal?: string, dump?: boolean, desc?: string) => {
    exit =
      typeof code === "number"
        ? { kind: "status", code }
        : { kind: "signal", signal: signal ?? "KILL", coreDumped: Boolean(dump), message: desc ?? "" };
  });
  return () => exit;
}

/**
 * Relays data between a downstream session channel and an upstream channel until both are done.
 * Resolves with the upstream's exit information (undefined if the target sent none).
 * @param exitOf what {@link watchExit} returned for `up`, called when the channel was handed over.
 */
export function relaySession(
  down: ServerChannel,
  up: ClientChannel,
  exitOf: () => ExitInfo | undefined,
  count: ByteCounter,
  taps: { up?: Tap | undefined; down?: Tap | undefined; stderr?: Tap | undefined } = {},
): Promise<ExitInfo | undefined> {
  // user → target; EOF passes on once everything before it is written.
  void pump(down, up, (n) => count("up", n), taps.up).then(() => {
    if (up.writable) up.end();
  });

  const upClosed = new Promise<void>((resolve) => up.once("close", () => resolve()));
  const outDone = pump(up, down, (n) => count("down", n), taps.down);
  // stderr is recorded apart from stdout (taps.stderr), so it never mixes into an SFTP/scp stream parse.
  const errDone = pump(up.stderr, down.stderr, (n) => count("down", n), taps.stderr ?? taps.down);

  // The user closed the channel (or the connection went away): tear down the upstream side.
  down.once("close", () => up.close());

  return Promise.all([outDone, errDone, upClosed]).then(() => {
    const exit = exitOf();
    finishDownstream(down, exit);
    return exit;
  });
}
