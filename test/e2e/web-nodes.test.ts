/**
 * The web console with a shared PostgreSQL state: two gateways (`varco serve` × 2, as in
 * state-shared.test.ts), A with a `web:` block. A session served by B shows in A's console with
 * node gw-b (NODE column, node filter), A's page of B's session names gw-b, has no player and
 * refuses the recording download (the file is on B), and reports the chain check of the mirrored
 * segment. PostgreSQL stopped: A's console still answers from its mirror and says how old it is.
 * A node name holding HTML (rows written into PostgreSQL directly) renders inert.
 * Plain fetch (no browser): the pages' markup is what is checked.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rowHash } from "../../src/audit/mirror.ts";
import { stopChild } from "../../src/demo/index.ts";
import { type Harness, ROOT, startHarness } from "../helpers/harness.ts";
import { havePostgres, startPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { type SecondNode, startSecondNode } from "../helpers/second-node.ts";

const BIN = join(ROOT, "bin/varco.mjs");
const HOSTILE_NODE = `<script>alert(1)</script><img src=x onerror=alert(2)>"'gw-x`;
let pg: TestPostgres;
let h: Harness;
let nodeB: SecondNode | undefined;
let base = "";
let cookie = "";
const pw = (uid: string) => h.env.users.find((u) => u.uid === uid)?.password ?? `${uid}-pw`;

const varco = (policy: string, args: string[]) => execa("node", [BIN, ...args, "--policy", policy], { reject: false, timeout: 60_000 });

/** Logs in through `port` with OpenSSH and runs `command`. */
async function sshVia(port: number, knownHosts: string, uid: string, command: string) {
  const r = await execa(
    "ssh",
    ["-p", String(port), "-o", `UserKnownHostsFile=${knownHosts}`, ...h.sshOptions(), `${uid}_vm1@127.0.0.1`, command],
    { reject: false, env: h.askpassEnv(pw(uid), h.nextCode(uid)), stdin: "ignore", timeout: 60_000 },
  );
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

const cookieOf = (r: Response, name: string) =>
  r.headers
    .getSetCookie()
    .find((c) => c.startsWith(`${name}=`))
    ?.split(";")[0];

async function apiLogin(uid: string): Promise<string> {
  const page = await fetch(`${base}/login`);
  const pre = cookieOf(page, "varco_login");
  const token = /name="login_token" value="([^"]+)"/.exec(await page.text())?.[1] ?? "";
  const body = new URLSearchParams({ login_token: token, uid, password: pw(uid), code: h.nextCode(uid) });
  const res = await fetch(`${base}/login`, { method: "POST", body, redirect: "manual", headers: { origin: base, cookie: pre ?? "" } });
  expect(res.status).toBe(303);
  return cookieOf(res, "varco_session") ?? "";
}

const get = async (path: string) => {
  const r = await fetch(`${base}${path}`, { headers: { cookie }, redirect: "manual" });
  return { status: r.status, body: await r.text() };
};

/** Polls `path` until `ok(body)` (bounded: 30 s). */
async function until(path: string, ok: (body: string) => boolean): Promise<string> {
  let last = "";
  for (let i = 0; i < 150; i++) {
    const r = await get(path);
    last = r.body;
    if (r.status === 200 && ok(last)) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${path} never showed what was expected:\n${last.slice(0, 4000)}`);
}

/** The session ids in a sessions table, with their node cell. */
const rowsOf = (body: string) =>
  [...body.matchAll(/<tr><td><a href="\/sessions\/([^"]+)">[^<]*<\/a><\/td><td class="node">([^<]*)<\/td>/g)].map((m) => ({
    id: decodeURIComponent(m[1] ?? ""),
    node: m[2] ?? "",
  }));

beforeAll(async () => {
  if (!havePostgres) return;
  pg = await startPostgres();
  const dir = mkdtempSync(join(tmpdir(), "varco-webnodes-"));
  mkdirSync(join(dir, "secrets"), { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, "secrets/pg.url"), `${pg.url}\n`, { mode: 0o600 });
  h = await startHarness({
    dir,
    extraUsers: ["carla.verdi", "dario.neri"],
    templateEdit: (t) =>
      `${t.replace("  state_dir: state\n", "  state_dir: state\n  node: gw-a\n")}state: { backend: postgres, url_file: secrets/pg.url }\n` +
      `web:\n  listen: "127.0.0.1:0"\n  auditor_groups: [astro]\n  admin_groups: [bio]\n  idle_timeout: 10m\n`,
  });
  const copy = await varco(h.env.policyFile, ["state", "copy", "--to", "postgres", "--force"]);
  expect(copy.exitCode, copy.stderr).toBe(0);
  nodeB = await startSecondNode(dir, h.env.policyFile, { firstNode: "gw-a", node: "gw-b" });
  const line = /"listen":"127\.0\.0\.1:(\d+)","tls":false,"msg":"web console listening"/;
  for (let i = 0; i < 200 && !line.test(h.gatewayOutput()); i++) await new Promise((r) => setTimeout(r, 50));
  const m = line.exec(h.gatewayOutput());
  if (!m) throw new Error(`no web console line in A's output:\n${h.gatewayOutput()}`);
  base = `http://127.0.0.1:${m[1]}`;
  cookie = await apiLogin("mario.rossi");
}, 180_000);

afterAll(async () => {
  if (h) writeFileSync("/tmp/webnodes-a.out", h.gatewayOutput());
  if (nodeB) await stopChild(nodeB.process);
  await h?.stop();
  await pg?.destroy();
}, 60_000);

describe.skipIf(!havePostgres)("the web console of gateway A shows every node's sessions (PostgreSQL state)", () => {
  let bSession = "";

  it("a session served by B shows in A's list with node gw-b; A's own with gw-a; the node filter keeps one node's", async () => {
    const viaB = await sshVia(nodeB?.port ?? 0, nodeB?.knownHosts ?? "", "carla.verdi", "echo from-b");
    expect(viaB.exitCode, viaB.stderr).toBe(0);
    const viaA = await sshVia(h.port, join(h.dir, "known_hosts"), "dario.neri", "echo from-a");
    expect(viaA.exitCode, viaA.stderr).toBe(0);
    const body = await until("/sessions", (x) => rowsOf(x).some((r) => r.node === "gw-b") && x.includes("dario.neri"));
    expect(body).toContain("<th>Node</th>");
    expect(body).toMatch(/id="nodes"/);
    expect(body).toMatch(/gw-a<\/span> \(this node, live\)/);
    expect(body).toMatch(/gw-b<\/span> \(data as of [^)]*old\)/);
    const all = rowsOf(body);
    expect(all.some((r) => r.node === "gw-a")).toBe(true);
    const onlyB = rowsOf((await get("/sessions?node=gw-b")).body);
    expect(onlyB.length).toBeGreaterThan(0);
    expect(onlyB.every((r) => r.node === "gw-b")).toBe(true);
    const onlyA = rowsOf((await get("/sessions?node=gw-a")).body);
    expect(onlyA.length).toBeGreaterThan(0);
    expect(onlyA.every((r) => r.node === "gw-a")).toBe(true);
    // carla's session is B's: in B's filter, not in A's.
    const b = await until("/sessions?node=gw-b&user=carla.verdi", (x) => rowsOf(x).length > 0 && !x.includes(">open<"));
    bSession = rowsOf(b)[0]?.id ?? "";
    expect(bSession).not.toBe("");
    expect(rowsOf((await get("/sessions?node=gw-a&user=carla.verdi")).body)).toEqual([]);
    expect(rowsOf((await get("/sessions?node=nowhere")).body)).toEqual([]);
  }, 120_000);

  it("A's page of B's session says node gw-b, checks the mirrored chain segment, and has no player", async () => {
    const page = await until(`/sessions/${bSession}`, (x) => x.includes('id="segment"') && x.includes("from-b"));
    expect(page).toMatch(/Served by node <span class="node">gw-b<\/span>/);
    expect(page).toMatch(/id="segment">Chain check of the mirrored segment: verified/);
    expect(page).toContain("The file is on node <span");
    expect(page).not.toContain('id="player"');
    expect(page).not.toContain("/play?channel=");
    expect(page).toContain("from-b");
    // The recording's hash is shown from the chain (verified segment), never read from a local file.
    const rec =
      /<tr><td>(\d+)<\/td><td>complete<\/td><td>\d+<\/td><td class="ok remote-recording">chained: the file is on node gw-b; SHA-256 <code>([0-9a-f]{64})<\/code>/.exec(
        page,
      );
    expect(rec, page).not.toBeNull();
    const channel = rec?.[1] ?? "";
    const onB = new Database(join(h.dir, "state-gw-b/audit.db"), { readonly: true });
    try {
      const row = onB.prepare("SELECT sha256 FROM recordings WHERE session_id = ? AND channel = ?").get(bSession, Number(channel)) as
        | { sha256: string }
        | undefined;
      expect(rec?.[2]).toBe(row?.sha256);
    } finally {
      onB.close();
    }
    const play = await get(`/sessions/${bSession}/play?channel=${channel}`);
    expect(play.status).toBe(200);
    expect(play.body).not.toContain('id="player"');
    expect(play.body).not.toContain("asciinema-player.min.js");
    // `echo from-b` ran without a terminal: its output is a raw recording (`.raw`), kept on B.
    const raw = await get(`/sessions/${bSession}/recordings/${channel}.raw`);
    expect(raw.status).toBe(404);
    expect(raw.body).toContain("on node gw-b");
    const json = await get(`/sessions/${bSession}/json`);
    expect(json.status).toBe(200);
    expect(JSON.parse(json.body).session.node).toBe("gw-b");
    // The view of another node's session is audited on A, like any other.
    expect(h.gatewayOutput()).not.toContain(new URL(pg.url).password);
  }, 60_000);

  it("search finds a command B's session ran, naming gw-b", async () => {
    const body = await until("/search?q=from-b", (x) => x.includes('<td class="node">gw-b</td>'));
    expect(body).toContain("<th>Node</th>");
  }, 60_000);

  it("a node name holding HTML renders inert (list, filter, session page)", async () => {
    const sid = "11111111-2222-3333-4444-555555555555";
    const ts = new Date().toISOString();
    const ev = {
      id: 1,
      ts,
      type: "session_start",
      session_id: sid,
      uid: "x.y",
      account: "x.y_vm1",
      target: "vm1-x",
      source: "127.0.0.1",
      result: "ok",
      data: "{}",
      prev_hash: "0".repeat(64),
      hash: "",
    };
    ev.hash = rowHash(ev);
    const q = (v: string | number | null) => (v === null ? "NULL" : typeof v === "number" ? String(v) : `$q$${v}$q$`);
    await pg.psql(
      `INSERT INTO audit_events (node, id, ts, type, session_id, uid, account, target, source, result, data, prev_hash, hash) VALUES (${[HOSTILE_NODE, ev.id, ev.ts, ev.type, ev.session_id, ev.uid, ev.account, ev.target, ev.source, ev.result, ev.data, ev.prev_hash, ev.hash].map(q).join(", ")});
       INSERT INTO audit_sessions (node, id, started_at, ended_at, uid, account, target, source, result, up_bytes, down_bytes, exit_status) VALUES (${[HOSTILE_NODE, sid, ts, null, "x.y", "x.y_vm1", "vm1-x", "127.0.0.1", "open", 0, 0, null].map(q).join(", ")});`,
    );
    const body = await until("/sessions", (x) => x.includes(sid.slice(0, 8)));
    expect(body).not.toContain("<script>alert(1)");
    expect(body).not.toContain("<img src=x");
    expect(body).toContain("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&quot;&#39;gw-x");
    const page = await get(`/sessions/${sid}`);
    expect(page.status).toBe(200);
    expect(page.body).not.toContain("<script>alert(1)");
    expect(page.body).toMatch(/Served by node <span class="node">&lt;script&gt;/);
    const filtered = await get(`/sessions?node=${encodeURIComponent(HOSTILE_NODE)}`);
    expect(rowsOf(filtered.body).map((r) => r.id)).toEqual([sid]);
    expect(filtered.body).not.toContain("<script>alert(1)");
  }, 60_000);

  it("PostgreSQL stopped: A's console still answers from the mirror and says how old it is", async () => {
    await pg.stop();
    try {
      const body = await until("/sessions?node=gw-b", (x) => x.includes("PostgreSQL unreachable, showing the last mirror"));
      expect(rowsOf(body).some((r) => r.id === bSession)).toBe(true);
      expect(body).toMatch(/gw-b<\/span> \(data as of [^;]*<span class="age">\d+ s<\/span> old; /);
      const page = await get(`/sessions/${bSession}`);
      expect(page.status).toBe(200);
      expect(page.body).toContain("PostgreSQL unreachable");
      expect(h.gatewayOutput()).toContain("mirrors could not be refreshed");
      expect(h.gatewayOutput()).not.toContain(new URL(pg.url).password);
    } finally {
      await pg.start();
    }
    await until("/sessions", (x) => !x.includes("PostgreSQL unreachable"));
  }, 120_000);
});
