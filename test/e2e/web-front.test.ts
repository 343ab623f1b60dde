/**
 * The console's front door end to end, on the real gateway. `web.hostnames` as a DNS-rebinding
 * attacker would try it: requests carry other `Host` headers (node:http), and Chromium resolves an
 * attacker's name to the console's address (`--host-resolver-rules`, the effect of a rebinding DNS
 * answer; skipped without /usr/bin/chromium). `web.trusted_proxies`: a "proxy" on 127.0.0.2 (a
 * loopback source address) and a client on 127.0.0.1 both send `X-Forwarded-For`; the audit
 * records the source only the trusted one may name.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { connect } from "node:net";
import { join } from "node:path";
import { execa } from "execa";
import { chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, ROOT, startHarness } from "../helpers/harness.ts";

const CHROMIUM = "/usr/bin/chromium";
const WEB = `\nweb:\n  listen: "127.0.0.1:0"\n  auditor_groups: [astro]\n  hostnames: [Bastion.Example, 127.0.0.1]\n  trusted_proxies: [127.0.0.2]\n`;

let h: Harness;
let port: number;

beforeAll(async () => {
  h = await startHarness({ templateEdit: (t) => `${t}${WEB}` });
  const line = /"listen":"127\.0\.0\.1:(\d+)","tls":false,"msg":"web console listening"/;
  for (let i = 0; i < 200 && !line.test(h.gatewayOutput()); i++) await new Promise((r) => setTimeout(r, 50));
  const m = line.exec(h.gatewayOutput());
  if (!m) throw new Error(`no web console line in the gateway output:\n${h.gatewayOutput()}`);
  port = Number(m[1]);
}, 120_000);

afterAll(async () => {
  await h?.stop();
});

interface Answer {
  status: number;
  body: string;
  cookies: string[];
}

/**
 * One request to the console on 127.0.0.1 with this `Host` header (none when undefined); a body is
 * posted as a same-origin form. `from`: the local address to connect from.
 */
function ask(
  host: string | undefined,
  method = "GET",
  path = "/login",
  body?: string,
  o: { from?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = host === undefined ? {} : { host };
    if (body !== undefined) Object.assign(headers, { "content-type": "application/x-www-form-urlencoded", origin: `http://${host}` });
    Object.assign(headers, o.headers);
    const req = request({ host: "127.0.0.1", port, path, method, headers, setHost: false, localAddress: o.from }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        text += d;
      });
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, body: text, cookies: (res.headers["set-cookie"] as string[] | undefined) ?? [] }),
      );
    });
    req.on("error", reject);
    req.setTimeout(10_000, () => req.destroy(new Error("timeout")));
    req.end(body);
  });
}

/** The status code of a raw HTTP/1.1 request written as is (request targets node:http would not send). */
function rawStatus(text: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let got = "";
    const sock = connect({ host: "127.0.0.1", port }, () => sock.end(text));
    sock.setTimeout(10_000, () => sock.destroy(new Error("timeout")));
    sock.on("data", (d) => {
      got += d.toString("latin1");
    });
    sock.on("error", reject);
    sock.on("close", () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(got)?.[1] ?? 0)));
  });
}

describe("web.hostnames", () => {
  it("serves the listed names, in any case, with any port, in absolute form", async () => {
    for (const host of ["bastion.example", `BASTION.example:${port}`, "bastion.example.:443", `127.0.0.1:${port}`]) {
      const r = await ask(host);
      expect(r.status, host).toBe(200);
      expect(r.body).toContain("login_token");
    }
  });

  it("answers 421 and nothing else to every other name, a look-alike, a malformed or a missing Host", async () => {
    const before = h.gatewayOutput().split("not in web.hostnames").length;
    for (const host of [
      "evil.example",
      `evil.example:${port}`,
      "bastion.example.evil.example",
      "evil.bastion.example",
      "bastion.example@evil.example",
      "bastion.example:80:80",
      "localhost",
      `[::1]:${port}`,
      undefined,
    ]) {
      const r = await ask(host);
      // Node's HTTP server or the URL parser refuses some malformed ones first, with 400.
      const malformed = host === undefined || host.includes("@") || host.split(":").length > 2;
      if (malformed) expect([400, 421], String(host)).toContain(r.status);
      else expect(r.status, host).toBe(421);
      if (r.status === 421) expect(r.body).toMatch(/does not answer to that host name/);
      expect(r.body).not.toContain("login_token");
      expect(r.cookies, String(host)).toEqual([]);
    }
    // An absolute-form request target names the host the server must use (RFC 9112 §3.2.2).
    for (const [target, host] of [
      ["http://evil.example/login", "bastion.example"],
      ["http://bastion.example/login", "evil.example"],
    ] as const)
      expect(await rawStatus(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`), target).toBe(421);
    expect(await rawStatus("GET http://bastion.example/login HTTP/1.1\r\nHost: bastion.example\r\nConnection: close\r\n\r\n")).toBe(200);
    // The login form posted through a rebound name is refused before any password is checked.
    const post = await ask("evil.example", "POST", "/login", "uid=mario.rossi&password=x&code=000000&login_token=x");
    expect(post.status).toBe(421);
    // Refusals are logged once a minute with their count, not once each.
    expect(h.gatewayOutput().split("not in web.hostnames").length - before).toBe(1);
  });

  it.skipIf(!existsSync(CHROMIUM))("a page of another name rebound to the console's address gets 421 in Chromium", async () => {
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--host-resolver-rules=MAP evil.example 127.0.0.1, MAP bastion.example 127.0.0.1"],
    });
    try {
      const page = await browser.newPage();
      const evil = await page.goto(`http://evil.example:${port}/login`);
      expect(evil?.status()).toBe(421);
      expect(await page.content()).not.toContain("login_token");
      const own = await page.goto(`http://bastion.example:${port}/login`);
      expect(own?.status()).toBe(200);
      expect(await page.locator("input[name=login_token]").count()).toBe(1);
    } finally {
      await browser.close();
    }
  });

  it("follows a reload: without the list, any name is served again", async () => {
    const policy = readFileSync(h.env.policyFile, "utf8");
    writeFileSync(h.env.policyFile, policy.replace(/\n {2}hostnames: \[[^\]]*\]/, ""));
    try {
      expect(await h.reloadGateway()).toBe("reloaded");
      expect((await ask("evil.example")).status).toBe(200);
    } finally {
      writeFileSync(h.env.policyFile, policy);
      expect(await h.reloadGateway()).toBe("reloaded");
    }
    expect((await ask("evil.example")).status).toBe(421);
  });
});

describe("web.trusted_proxies", () => {
  /** Posts a wrong password through the login form from `from`, with this X-Forwarded-For. */
  async function refusedLogin(from: string, forwardedFor: string): Promise<void> {
    const page = await ask("bastion.example", "GET", "/login", undefined, { from });
    const token = /name="login_token" value="([^"]+)"/.exec(page.body)?.[1] ?? "";
    const cookie = (page.cookies[0] ?? "").split(";")[0] ?? "";
    const form = new URLSearchParams({ uid: "mario.rossi", password: "wrong", code: "000000", login_token: token }).toString();
    const r = await ask("bastion.example", "POST", "/login", form, { from, headers: { cookie, "x-forwarded-for": forwardedFor } });
    expect(r.status).toBe(401);
  }
  /** The sources of the web login refusals audited so far. */
  async function refusedSources(): Promise<string[]> {
    const r = await execa(
      "node",
      [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, "audit", "export", "--type", "web_login_refused"],
      {
        reject: false,
      },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    return String(r.stdout)
      .split("\n")
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { source: string }).source);
  }

  it("audits the client a trusted proxy names, never what the client wrote before it", async () => {
    await refusedLogin("127.0.0.2", "203.0.113.66, 198.51.100.7");
    expect((await refusedSources()).at(-1)).toBe("198.51.100.7");
  });

  it("ignores X-Forwarded-For from a peer that is not a trusted proxy", async () => {
    await refusedLogin("127.0.0.1", "198.51.100.8");
    expect((await refusedSources()).at(-1)).toBe("127.0.0.1");
  });
});
