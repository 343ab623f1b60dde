/**
 * The web console end to end: the real gateway (`varco serve`) with a `web:` block, the test
 * slapd's groups (astro → auditors, bio → admins, testers → outside), the real OpenSSH client for
 * the sessions, plain fetch for the API-level properties (CSRF, cookies, headers, authorization)
 * and Debian's Chromium through playwright-core for the pages (skipped, with a message, when
 * /usr/bin/chromium is absent). Screenshots go to test-artifacts/web/ (and, with UPDATE_SCREENSHOT=1,
 * to docs/web-session.png, the README's picture).
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { execa } from "execa";
import { chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openAuditStore } from "../../src/audit/index.ts";
import { closedSessionOf, type Harness, ROOT, startHarness } from "../helpers/harness.ts";

const CHROMIUM = "/usr/bin/chromium";
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) console.warn(`web.test.ts: ${CHROMIUM} is absent: the browser tests are skipped (apt-get install chromium)`);
const ARTIFACTS = join(ROOT, "test-artifacts/web");
const USERS = ["web.out", "web.run", "web.live", "web.bad", "web.raw"];
/** Computed by the shell, so only the output (the recording) holds it, not the command. */
const MARK_CMD = "echo WEBMARK-$((6*7))";
const HOSTILE = `"'><img src=x onerror=alert(1)><script>alert(2)</script>\x1b]0;pwned\x07\u202e`;

let h: Harness;
let base: string;
let auditDb: string;

function password(uid: string): string {
  return h.env.users.find((u) => u.uid === uid)?.password ?? `${uid}-pw`;
}

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  h = await startHarness({
    extraUsers: USERS,
    templateEdit: (t) => `${t}\nweb:\n  listen: "127.0.0.1:0"\n  auditor_groups: [astro]\n  admin_groups: [bio]\n  idle_timeout: 10m\n`,
  });
  const line = /"listen":"127\.0\.0\.1:(\d+)","tls":false,"msg":"web console listening"/;
  for (let i = 0; i < 200 && !line.test(h.gatewayOutput()); i++) await new Promise((r) => setTimeout(r, 50));
  const m = line.exec(h.gatewayOutput());
  if (!m) throw new Error(`no web console line in the gateway output:\n${h.gatewayOutput()}`);
  base = `http://127.0.0.1:${m[1]}`;
  auditDb = join(h.dir, "state/audit.db");
}, 120_000);

afterAll(async () => {
  await h?.stop();
});

/** The audit events of these types (read-only connection). */
function events(
  types: string[],
): Array<{ type: string; uid: string | null; session_id: string | null; result: string | null; data: string }> {
  const db = new Database(auditDb, { readonly: true });
  try {
    return db
      .prepare(`SELECT type, uid, session_id, result, data FROM events WHERE type IN (${types.map(() => "?").join(",")}) ORDER BY id`)
      .all(...types) as never;
  } finally {
    db.close();
  }
}

const cookieOf = (r: Response, name: string): string | undefined =>
  r.headers
    .getSetCookie()
    .find((c) => c.startsWith(`${name}=`))
    ?.split(";")[0];

/** Logs in through the API; returns the login response and the session cookie (name=value). */
async function apiLogin(
  uid: string,
  o: { password?: string; code?: string } = {},
): Promise<{ res: Response; cookie?: string | undefined }> {
  const page = await fetch(`${base}/login`);
  const pre = cookieOf(page, "varco_login");
  const token = /name="login_token" value="([^"]+)"/.exec(await page.text())?.[1] ?? "";
  const body = new URLSearchParams({ login_token: token, uid, password: o.password ?? password(uid), code: o.code ?? h.nextCode(uid) });
  const res = await fetch(`${base}/login`, {
    method: "POST",
    body,
    redirect: "manual",
    headers: { origin: base, cookie: pre ?? "" },
  });
  return { res, cookie: cookieOf(res, "varco_session") };
}

async function csrfOf(cookie: string): Promise<string> {
  const r = await fetch(`${base}/sessions`, { headers: { cookie } });
  return /name="csrf" value="([^"]+)"/.exec(await r.text())?.[1] ?? "";
}

const post = (path: string, cookie: string, form: Record<string, string>, origin: string | null = base) =>
  fetch(`${base}${path}`, {
    method: "POST",
    body: new URLSearchParams(form),
    redirect: "manual",
    headers: { cookie, ...(origin ? { origin } : {}) },
  });

describe("web console API", () => {
  let auditor: string;

  it("logs an auditor in with password and code: HttpOnly SameSite=Strict cookie, strict headers, audited", async () => {
    const { res, cookie } = await apiLogin("mario.rossi");
    expect(res.status).toBe(303);
    expect(res.headers.get("location")).toBe("/sessions");
    const set = res.headers.getSetCookie().find((c) => c.startsWith("varco_session=")) ?? "";
    expect(set).toMatch(/HttpOnly/i);
    expect(set).toMatch(/SameSite=Strict/i);
    expect(set).toMatch(/Path=\//);
    expect(set).not.toMatch(/Secure/i); // plain HTTP here (TLS: Secure and __Host-)
    expect(cookie).toBeDefined();
    auditor = cookie as string;
    const page = await fetch(`${base}/sessions`, { headers: { cookie: auditor } });
    expect(page.status).toBe(200);
    const csp = page.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain("unsafe-inline");
    expect(page.headers.get("x-frame-options")).toBe("DENY");
    expect(page.headers.get("x-content-type-options")).toBe("nosniff");
    expect(page.headers.get("referrer-policy")).toBe("no-referrer");
    expect(page.headers.get("cache-control")).toBe("no-store");
    expect(await page.text()).not.toMatch(/<script>|<style>| on[a-z]+=/);
    expect(events(["web_login"]).some((e) => e.uid === "mario.rossi" && e.result === "ok")).toBe(true);
  });

  it("without a login: pages redirect to /login, posts and downloads get 401", async () => {
    const page = await fetch(`${base}/sessions`, { redirect: "manual" });
    expect(page.status).toBe(303);
    expect(page.headers.get("location")).toBe("/login");
    expect((await post("/logout", "", {})).status).toBe(401);
    expect((await fetch(`${base}/sessions/x/recordings/1.cast`)).status).toBe(401);
    expect((await fetch(`${base}/sessions/x/json`)).status).toBe(401);
    // A forged or stale cookie is no login either.
    expect((await fetch(`${base}/sessions`, { redirect: "manual", headers: { cookie: `varco_session=${"A".repeat(43)}` } })).status).toBe(
      303,
    );
  });

  it("refuses a POST without the CSRF token, with a wrong one, from another origin, or without Origin", async () => {
    const csrf = await csrfOf(auditor);
    expect(csrf.length).toBeGreaterThan(20);
    expect((await post("/logout", auditor, {})).status).toBe(403);
    expect((await post("/logout", auditor, { csrf: `${csrf.slice(0, -1)}x` })).status).toBe(403);
    expect((await post("/logout", auditor, { csrf }, "http://evil.example")).status).toBe(403);
    expect((await post("/logout", auditor, { csrf }, `${base}.evil.example`)).status).toBe(403);
    expect((await post("/logout", auditor, { csrf }, null)).status).toBe(403);
    // Fetch Metadata wins over a matching Origin: a cross-site request is refused.
    const crossSite = await fetch(`${base}/logout`, {
      method: "POST",
      body: new URLSearchParams({ csrf }),
      redirect: "manual",
      headers: { cookie: auditor, origin: base, "sec-fetch-site": "cross-site" },
    });
    expect(crossSite.status).toBe(403);
    // Still logged in after all of them.
    expect((await fetch(`${base}/sessions`, { headers: { cookie: auditor }, redirect: "manual" })).status).toBe(200);
    // The login form needs its own double-submit token and the same origin.
    const noToken = await fetch(`${base}/login`, {
      method: "POST",
      body: new URLSearchParams({ uid: "mario.rossi", password: "x", code: "1" }),
      headers: { origin: base },
    });
    expect(noToken.status).toBe(403);
  });

  it("an auditor cannot see or end live sessions nor lift lockouts", async () => {
    const csrf = await csrfOf(auditor);
    expect((await fetch(`${base}/live`, { headers: { cookie: auditor } })).status).toBe(403);
    expect((await post("/live/00000000-0000-0000-0000-000000000000/terminate", auditor, { csrf, reason: "x" })).status).toBe(403);
    expect((await post("/lockouts/unlock", auditor, { csrf, uid: "web.bad" })).status).toBe(403);
  });

  it("a command without a terminal is raw output: a download link, no player; only N.raw serves it, byte for byte", async () => {
    await h.ssh("web.raw_vm1", ["printf 'RAW\\377out\\n'"]);
    const shown = await closedSessionOf(h.env.policyFile, "web.raw");
    const id = shown.session.id;
    const path = shown.recordings[0]?.path ?? "";
    expect(path).toMatch(/-1\.raw$/);
    const pageText = await (await fetch(`${base}/sessions/${id}`, { headers: { cookie: auditor } })).text();
    expect(pageText).toContain(`href="/sessions/${id}/recordings/1.raw" download>Download output</a>`);
    expect(pageText).not.toContain("/play?channel=");
    expect(pageText).not.toContain("1.cast");
    const raw = await fetch(`${base}/sessions/${id}/recordings/1.raw`, { headers: { cookie: auditor } });
    expect(raw.status).toBe(200);
    expect(raw.headers.get("content-type")).toBe("application/octet-stream");
    expect(raw.headers.get("content-disposition")).toBe(`attachment; filename="session-${id}-1.raw"`);
    expect(raw.headers.get("x-varco-recording-check")).toBe("ok");
    const body = Buffer.from(await raw.arrayBuffer());
    expect(body.equals(readFileSync(path))).toBe(true);
    expect(body.includes(Buffer.from("RAW\xffout\n", "latin1"))).toBe(true);
    // The other name of the same channel, another extension, or no login: nothing.
    for (const file of ["1.cast", "1.raw.cast", "1.txt"])
      expect((await fetch(`${base}/sessions/${id}/recordings/${file}`, { headers: { cookie: auditor } })).status).toBe(404);
    expect((await fetch(`${base}/sessions/${id}/recordings/1.raw`)).status).toBe(401);
    // Asking to play it shows the page without a player.
    const play = await fetch(`${base}/sessions/${id}/play?channel=1`, { headers: { cookie: auditor } });
    expect(play.status).toBe(200);
    expect(await play.text()).not.toContain('id="player"');
  }, 60_000);

  it("refuses a user outside the web groups exactly like a wrong password, and audits the real reason", async () => {
    const outsider = await apiLogin("web.out");
    const wrong = await apiLogin("web.bad", { password: "not-the-password" });
    expect(outsider.res.status).toBe(401);
    expect(wrong.res.status).toBe(401);
    expect(outsider.cookie).toBeUndefined();
    const strip = (t: string) => t.replace(/value="[^"]+"/g, "");
    expect(strip(await outsider.res.text())).toBe(strip(await wrong.res.text()));
    const refused = events(["web_login_refused"]);
    expect(refused.some((e) => e.uid === "web.out" && e.result === "not_in_web_groups")).toBe(true);
    expect(refused.some((e) => e.uid === "web.bad" && e.result === "bad_password")).toBe(true);
    // A replayed code (already used by the outsider's login) is refused too.
  });

  it("logout forgets the login (the cookie no longer works) and is audited", async () => {
    const { cookie } = await apiLogin("anna.bianchi");
    const admin = cookie as string;
    const csrf = await csrfOf(admin);
    // An admin lifts a lockout (audited with the admin's uid).
    const un = await post("/lockouts/unlock", admin, { csrf, uid: "web.bad" });
    expect(un.status).toBe(303);
    expect(events(["unlock"]).some((e) => e.uid === "web.bad" && JSON.parse(e.data).by === "anna.bianchi")).toBe(true);
    expect((await post("/logout", admin, { csrf })).status).toBe(303);
    expect((await fetch(`${base}/sessions`, { headers: { cookie: admin }, redirect: "manual" })).status).toBe(303);
    expect(events(["web_logout"]).some((e) => e.uid === "anna.bianchi")).toBe(true);
  });
});

describe.skipIf(!haveChromium)("web console in Chromium", () => {
  let browser: Awaited<ReturnType<typeof chromium.launch>>;
  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
  });
  afterAll(async () => {
    await browser?.close();
  });

  /** A page that records every dialog (an XSS that ran would open one). */
  async function newPage(): Promise<{ page: Page; dialogs: string[] }> {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await ctx.newPage();
    const dialogs: string[] = [];
    page.on("dialog", (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    return { page, dialogs };
  }

  /** One admin login (anna.bianchi) for the tests that need one: a code is usable once. */
  let admin: Promise<{ page: Page; dialogs: string[] }> | undefined;
  const adminPage = () => {
    admin ??= newPage().then(async (p) => {
      await browserLogin(p.page, "anna.bianchi");
      return p;
    });
    return admin;
  };

  async function browserLogin(page: Page, uid: string): Promise<void> {
    await page.goto(`${base}/login`);
    await page.fill('input[name="uid"]', uid);
    await page.fill('input[name="password"]', password(uid));
    await page.fill('input[name="code"]', h.nextCode(uid));
    await page.click('button[type="submit"]');
    await page.waitForLoadState();
    if (!page.url().endsWith("/sessions"))
      throw new Error(`login of ${uid} failed: ${page.url()} ${await page.content()}\n${h.gatewayOutput().slice(-3000)}`);
  }

  it("an auditor finds a session by its command, plays it and sees the command's output", async () => {
    // With a terminal: an asciicast, which the player plays (output without one is raw bytes, downloaded).
    const r = await h.ssh("web.run_vm1", [MARK_CMD], { extra: ["-tt"] });
    expect(r.stdout).toContain("WEBMARK-42");
    await new Promise((res) => setTimeout(res, 500));
    const { page, dialogs } = await newPage();
    await browserLogin(page, "mario.rossi");
    await page.waitForURL(`${base}/sessions`);
    await page.goto(`${base}/search?q=${encodeURIComponent("WEBMARK-$((6")}`);
    await page.screenshot({ path: join(ARTIFACTS, "search.png"), fullPage: true });
    await page.click("table.hits a");
    await page.waitForSelector("table.timeline");
    expect(await page.textContent("table.timeline")).toContain(MARK_CMD);
    await page.click('a:text("Play")');
    await page.waitForSelector("#player .ap-player, #player .ap-wrapper", { timeout: 20_000 });
    // Start playback, then wait for the recorded output on the player's terminal.
    await page.click("#player");
    await page.waitForFunction(() => (document.querySelector("#player")?.textContent ?? "").includes("WEBMARK-42"), undefined, {
      timeout: 30_000,
    });
    await page.screenshot({ path: join(ARTIFACTS, "session.png"), fullPage: true });
    // The README's picture is refreshed on request only (a test run never edits the repository).
    if (process.env.UPDATE_SCREENSHOT === "1") await page.screenshot({ path: join(ROOT, "docs/web-session.png"), fullPage: true });
    expect(dialogs).toEqual([]);
    const views = events(["web_view"]);
    expect(views.some((e) => e.uid === "mario.rossi" && JSON.parse(e.data).what === "recording")).toBe(true);
    expect(views.some((e) => e.uid === "mario.rossi" && JSON.parse(e.data).what === "session")).toBe(true);
  }, 120_000);

  it("hostile commands, paths, account names and targets render inert", async () => {
    // A real hostile command through the gateway…
    await h.ssh("web.live_vm1", [`echo '${HOSTILE.replace(/'/g, "")}' # ${HOSTILE.replace(/'/g, "")}`]);
    // …and a hostile session written to the trail (a directory value or target name the gateway would store as is).
    const store = openAuditStore(auditDb);
    const sid = "00000000-dead-beef-0000-000000000001";
    store.startSession({
      id: sid,
      uid: `<script>alert(7)</script>`,
      account: `x"'><img src=x onerror=alert(8)>_vm1`,
      target: HOSTILE,
      source: "127.0.0.1",
    });
    store.append({ type: "exec", sessionId: sid, uid: "u", data: { command: HOSTILE } });
    store.append({ type: "file", sessionId: sid, uid: "u", data: { protocol: "sftp", op: "upload", path: `/tmp/${HOSTILE}`, size: 5 } });
    store.endSession(sid, { result: HOSTILE, upBytes: 1, downBytes: 2, exitStatus: 0 });
    store.close();
    const { page, dialogs } = await adminPage();
    for (const path of ["/sessions", `/sessions/${sid}`, `/search?q=${encodeURIComponent("onerror")}`]) {
      await page.goto(`${base}${path}`);
      const injected = await page.evaluate(() => ({
        handlers: document.querySelectorAll("[onerror],[onload],[onclick]").length,
        inlineScripts: [...document.querySelectorAll("script")].filter((s) => !s.src).length,
        imgs: document.querySelectorAll("img").length,
        title: document.title,
      }));
      expect(injected, path).toEqual({ handlers: 0, inlineScripts: 0, imgs: 0, title: injected.title });
      expect(injected.title).not.toContain("pwned");
    }
    await page.goto(`${base}/sessions/${sid}`);
    const shown = (await page.textContent("table.timeline")) ?? "";
    expect(shown).toContain("<script>alert(2)</script>");
    expect(shown).toContain("\\x1b]0;pwned\\x07");
    expect(shown).toContain("\\u202e");
    await page.screenshot({ path: join(ARTIFACTS, "hostile.png"), fullPage: true });
    expect(dialogs).toEqual([]);
  }, 120_000);

  it("an admin ends a live ssh session: the client is told why and exits; audited with the admin's uid", async () => {
    const running = execa("ssh", [...h.sshOptions(), "web.live_vm1@127.0.0.1", "sleep 120"], {
      reject: false,
      env: h.askpassEnv(password("web.live"), h.nextCode("web.live")),
      stdin: "ignore",
      timeout: 90_000,
    });
    const { page, dialogs } = await adminPage();
    let found = false;
    for (let i = 0; i < 100 && !found; i++) {
      await page.goto(`${base}/live`);
      found = ((await page.textContent("table.live")) ?? "").includes("web.live_vm1");
      if (!found) await new Promise((r) => setTimeout(r, 200));
    }
    expect(found).toBe(true);
    await page.screenshot({ path: join(ARTIFACTS, "live.png"), fullPage: true });
    const row = page.locator("table.live tr", { hasText: "web.live_vm1" });
    await row.locator('input[name="reason"]').fill("maintenance window");
    await Promise.all([page.waitForNavigation(), row.locator('button:text("End session")').click()]);
    expect(
      page.url(),
      h
        .gatewayOutput()
        .split("\n")
        .filter((l) => l.includes("error"))
        .join("\n"),
    ).toBe(`${base}/live`);
    const r = await running;
    expect(r.exitCode).not.toBe(0);
    expect(String(r.stderr)).toContain("ended by an administrator (anna.bianchi): maintenance window");
    const ended = events(["session_terminated"]);
    expect(ended.some((e) => e.uid === "anna.bianchi" && JSON.parse(e.data).user === "web.live")).toBe(true);
    expect(dialogs).toEqual([]);
  }, 120_000);
});
