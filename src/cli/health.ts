/**
 * `varco health`: asks the running gateway's `/healthz`. Kept light on purpose (no policy schema,
 * no SSH or database modules): keepalived and Nagios run it every few seconds, and it must answer
 * for the running gateway even when the policy file on disk has been broken by an edit since (the
 * gateway keeps its last good policy, so only `gateway.metrics_listen` is read from the file).
 */
import { readFileSync } from "node:fs";
import { get } from "node:http";
import { parse } from "yaml";
import { parseHostPort } from "../policy/units.ts";

/** One check of `/healthz` as the gateway reports it. */
export interface HealthCheckResult {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

/**
 * `gateway.metrics_listen` of the policy at `file`, or undefined when it is not set.
 * @throws Error when the file cannot be read or parsed as YAML, or the value is not host:port.
 */
export function metricsListenOf(file: string): string | undefined {
  let doc: unknown;
  try {
    doc = parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message.split("\n")[0]}`);
  }
  const listen = (doc as { gateway?: { metrics_listen?: unknown } } | null)?.gateway?.metrics_listen;
  if (listen === undefined || listen === null) return undefined;
  if (typeof listen !== "string" || !parseHostPort(listen)) throw new Error(`${file}: gateway.metrics_listen is not a host:port`);
  return listen;
}

/**
 * GET http://`listen`/`path` (default `/healthz`) → `{ status, body }`; a wildcard host is asked on loopback.
 * @throws Error on no answer within `timeoutMs` or a body that is not JSON.
 */
export function fetchHealth(
  listen: string,
  timeoutMs = 5000,
  path = "/healthz",
): Promise<{ status: number; body: { ok: boolean; checks: HealthCheckResult[] } }> {
  const { host, port } = parseHostPort(listen) ?? { host: "127.0.0.1", port: 9108 };
  const connectHost = host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "::1" : host;
  return new Promise((resolve, reject) => {
    const req = get({ host: connectHost, port, path, timeout: timeoutMs }, (res) => {
      let text = "";
      res.on("data", (d: Buffer) => {
        text += d.toString();
      });
      res.on("end", () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) });
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error(`no answer from ${listen} within ${timeoutMs} ms`)));
    req.on("error", reject);
  });
}
