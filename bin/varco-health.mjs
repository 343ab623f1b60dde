#!/usr/bin/env node
// Minimal, dependency-free liveness probe for keepalived's track_script: GET http://HOST:PORT/livez,
// exit 0 when the gateway is alive (200: process answering, SSH listener bound, audit DB writable), 1
// otherwise. Not /healthz: readiness includes the directory, and an LDAP outage both nodes see must not
// take the VIP off both. Starts in tens of ms (no TypeScript loader),
// so a loaded machine does not turn a slow probe into a failover. Usage: varco-health.mjs HOST:PORT
import { get } from "node:http";

const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(process.argv[2] ?? "");
if (!m) {
  console.error("usage: varco-health.mjs HOST:PORT (gateway.metrics_listen)");
  process.exit(2);
}
const host = (m[1] ?? m[2]) === "0.0.0.0" ? "127.0.0.1" : (m[1] ?? m[2]);
const req = get({ host, port: Number(m[3]), path: "/livez", timeout: 2000 }, (res) => {
  res.resume();
  res.on("end", () => process.exit(res.statusCode === 200 ? 0 : 1));
});
req.on("timeout", () => req.destroy(new Error("timeout")));
req.on("error", () => process.exit(1));
