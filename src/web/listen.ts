/**
 * The web console's listener: @hono/node-server over node:http, or node:https with the policy's
 * `web.tls` certificate. Its own listener, never an SSH or metrics port (policy check).
 */
import { readFileSync } from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { createWebApp, type WebConsoleDeps } from "./server.ts";

export interface WebListener {
  readonly address: AddressInfo;
  close(): Promise<void>;
}

/**
 * Starts the console on `host:port` (port 0: any free one).
 * @param tls PEM files, already resolved against the policy file.
 * @throws Error when the files cannot be read or the address cannot be bound.
 */
export async function startWebConsole(
  o: { host: string; port: number; tls?: { certFile: string; keyFile: string } | undefined },
  deps: Omit<WebConsoleDeps, "tls">,
): Promise<WebListener> {
  const app = createWebApp({ ...deps, tls: o.tls !== undefined });
  const tlsOptions = o.tls ? { cert: readFileSync(o.tls.certFile), key: readFileSync(o.tls.keyFile) } : undefined;
  return new Promise((resolve, reject) => {
    const server = serve(
      {
        fetch: app.fetch,
        port: o.port,
        hostname: o.host,
        ...(tlsOptions ? { createServer: createHttpsServer, serverOptions: tlsOptions } : {}),
      },
      (info) => {
        server.off("error", reject);
        // An error of the listening socket must not end the process: logged.
        server.on("error", (err) => deps.logger?.error({ err: err.message }, "web console listener error"));
        resolve({
          address: info,
          close: () =>
            new Promise<void>((done) => {
              server.close(() => done());
              (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
            }),
        });
      },
    );
    // Bounded before authentication: slow headers and bodies are cut.
    const http = server as unknown as { headersTimeout: number; requestTimeout: number; maxHeadersCount: number };
    http.headersTimeout = 10_000;
    http.requestTimeout = 30_000;
    http.maxHeadersCount = 100;
    server.once("error", reject);
  });
}
