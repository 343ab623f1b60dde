/**
 * Prometheus metrics (prom-client) and the local HTTP endpoint serving `/metrics` and `/healthz`.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Gauge, Histogram, Registry } from "prom-client";

/** What the gateway reports; every method is cheap and never throws. */
export interface GatewayMetrics {
  login(result: string): void;
  /** Time from the first auth request to the verdict, seconds. */
  authSeconds(s: number): void;
  /** Time to connect and authenticate upstream, seconds. */
  upstreamSeconds(s: number): void;
  /** Bytes relayed, counted when a channel closes. */
  bytes(direction: "up" | "down", n: number): void;
  ldapError(): void;
  policyReload(result: "ok" | "refused"): void;
}

export const NO_METRICS: GatewayMetrics = {
  login: () => undefined,
  authSeconds: () => undefined,
  upstreamSeconds: () => undefined,
  bytes: () => undefined,
  ldapError: () => undefined,
  policyReload: () => undefined,
};

export interface MetricsRegistry extends GatewayMetrics {
  readonly registry: Registry;
  /** Sets the live gauges just before a scrape. */
  setGauges(g: { sessions: number; unauthenticated: number; netGeneration?: number | undefined; netAppliedAt?: number | undefined }): void;
}

export function createMetrics(): MetricsRegistry {
  const registry = new Registry();
  const sessions = new Gauge({ name: "varco_sessions_active", help: "Logged-in sessions", registers: [registry] });
  const unauth = new Gauge({ name: "varco_connections_unauthenticated", help: "Connections still logging in", registers: [registry] });
  const logins = new Counter({
    name: "varco_logins_total",
    help: "Login attempts by result",
    labelNames: ["result"],
    registers: [registry],
  });
  const auth = new Histogram({
    name: "varco_auth_duration_seconds",
    help: "Time to decide a login",
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const upstream = new Histogram({
    name: "varco_upstream_connect_seconds",
    help: "Time to connect and authenticate to a target",
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers: [registry],
  });
  const bytes = new Counter({
    name: "varco_relayed_bytes_total",
    help: "Bytes relayed (up = user to target)",
    labelNames: ["direction"],
    registers: [registry],
  });
  const ldap = new Counter({ name: "varco_ldap_errors_total", help: "Directory errors (down, TLS, timeouts)", registers: [registry] });
  const reloads = new Counter({
    name: "varco_policy_reloads_total",
    help: "Policy reloads by result",
    labelNames: ["result"],
    registers: [registry],
  });
  const netGen = new Gauge({ name: "varco_net_generation", help: "Network generation in force (varco net apply)", registers: [registry] });
  const netAt = new Gauge({
    name: "varco_net_applied_timestamp_seconds",
    help: "When the network generation in force was applied",
    registers: [registry],
  });
  return {
    registry,
    login: (r) => logins.inc({ result: r }),
    authSeconds: (s) => auth.observe(s),
    upstreamSeconds: (s) => upstream.observe(s),
    bytes: (d, n) => bytes.inc({ direction: d }, n),
    ldapError: () => ldap.inc(),
    policyReload: (r) => reloads.inc({ result: r }),
    setGauges(g) {
      sessions.set(g.sessions);
      unauth.set(g.unauthenticated);
      if (g.netGeneration !== undefined) netGen.set(g.netGeneration);
      if (g.netAppliedAt !== undefined) netAt.set(g.netAppliedAt / 1000);
    },
  };
}

/** One readiness check. */
export interface HealthCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface HealthEndpoint {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Serves on `host:port`:
 * - `GET /metrics`: Prometheus text format;
 * - `GET /healthz`: readiness, 200 when every check of `checks` passes (directory included), 503 otherwise;
 * - `GET /livez`: liveness, 200 when every check of `liveness` passes, 503 otherwise. Liveness is what
 *   keepalived's track_script asks: it must not depend on anything both HA nodes share (the directory),
 *   or one outage faults both nodes. Without `liveness`, /livez answers 200 while the process serves HTTP.
 * Both health bodies are JSON `{ ok, checks: [{ name, ok, detail }] }`.
 */
export async function serveHealth(
  host: string,
  port: number,
  metrics: MetricsRegistry,
  checks: () => Promise<HealthCheck[]>,
  beforeScrape: () => void,
  liveness: () => Promise<HealthCheck[]> = async () => [],
): Promise<HealthEndpoint> {
  const server: Server = createServer((req, res) => {
    void (async () => {
      if (req.method !== "GET") {
        res.writeHead(405).end();
        return;
      }
      if (req.url === "/metrics") {
        beforeScrape();
        res.writeHead(200, { "content-type": metrics.registry.contentType });
        res.end(await metrics.registry.metrics());
        return;
      }
      if (req.url === "/healthz" || req.url === "/livez") {
        const list = await (req.url === "/livez" ? liveness() : checks());
        const ok = list.every((c) => c.ok);
        res.writeHead(ok ? 200 : 503, { "content-type": "application/json" });
        res.end(JSON.stringify({ ok, checks: list }));
        return;
      }
      res.writeHead(404).end();
    })().catch(() => {
      // After the headers went out (a scrape that failed mid-way) only the body can still end.
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
