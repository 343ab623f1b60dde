/**
 * The connection monitor: counts activity on every channel (session channels, -L and -R
 * forwards alike), closes a connection idle for `gateway.limits.idle_timeout`, and bounds the
 * channels open at once (`gateway.limits.max_channels`).
 */

export interface Monitor {
  /** Bytes moved on some channel: the connection is not idle. */
  activity(): void;
  /** A channel wants to open: false (and nothing counted) when `max_channels` are open already. */
  openChannel(): boolean;
  closeChannel(): void;
  /** Channels open now. */
  readonly channels: number;
  /** Starts the idle clock (after authentication). */
  start(): void;
  stop(): void;
}

export interface MonitorOptions {
  /** ms without a relayed byte after which `onIdle` runs. */
  readonly idleMs: number;
  readonly maxChannels: number;
  readonly now: () => number;
  readonly onIdle: () => void;
}

export function createMonitor(o: MonitorOptions): Monitor {
  let last = o.now();
  let open = 0;
  let timer: NodeJS.Timeout | undefined;
  return {
    activity() {
      last = o.now();
    },
    openChannel() {
      if (open >= o.maxChannels) return false;
      open += 1;
      return true;
    },
    closeChannel() {
      if (open > 0) open -= 1;
    },
    get channels() {
      return open;
    },
    start() {
      last = o.now();
      timer = setInterval(
        () => {
          if (o.now() - last > o.idleMs) o.onIdle();
        },
        Math.min(Math.max(o.idleMs / 10, 1000), 60_000),
      );
      timer.unref();
    },
    stop() {
      clearInterval(timer);
    },
  };
}
