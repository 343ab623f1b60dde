#!/usr/bin/env node
// Minimal, dependency-free health probe for keepalived's track_script: GET http://HOST:PORT/healthz,
// exit 0 when the gateway is ready (200), 1 otherwise. Starts in tens of ms (no TypeScript loader),
// so a loaded machine does not turn a slow probe into a failover. Usage: varco-health.mjs HOST:PORT
import { get } from "node:http";

const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(process.argv[2] ?? "");
if (!m) {
  console.error("usage: varco-health.mjs HOST:PORT (gateway.metrics_listen)");
  process.exit(2);
}
const host = (m[1] ?? m[2]) === "0.0.0.0" ? "127.0.0.1" : (m[1] ?? m[2]);
const req = get({ host, port: Number(m[3]), path: "/healthz", timeout: 2000 }, (res) => {
  res.resume();
  res.on("end", () => process.exit(res.statusCode === 200 ? 0 : 1));
});
req.on("timeout", () => req.destroy(new Error("timeout")));
req.on("error", () => process.exit(1));
