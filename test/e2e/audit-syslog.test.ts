/**
 * The audit trail leaves the box as it is written: a real rsyslogd (imtcp on loopback, octet-counted
 * RFC 5424, written out with RSYSLOG_SyslogProtocol23Format so what lands in the file is what rsyslog
 * parsed) receives the login event with its chain hash and the sealed anchor of a gateway with
 * gateway.audit_syslog. Root is not required.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, ROOT, startHarness } from "../helpers/harness.ts";

let dir = "";
let rsPid = 0;
let rs: ResultPromise | undefined;
let h: Harness | undefined;
const out = () => join(dir, "syslog.out");
const received = () => (existsSync(out()) ? readFileSync(out(), "utf8") : "");

async function until<T>(get: () => T | undefined, what: string, ms = 20_000): Promise<T> {
  for (let i = 0; i < ms / 100; i++) {
    const v = get();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}\nsyslog file:\n${received()}\ngateway:\n${h?.gatewayOutput() ?? ""}`);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "varco-syslog-e2e-"));
  const work = join(dir, "rsyslog");
  mkdirSync(work);
  const conf = join(dir, "rsyslog.conf");
  writeFileSync(
    conf,
    [
      `global(workDirectory="${work}")`,
      `module(load="imtcp")`,
      `input(type="imtcp" address="127.0.0.1" port="0" listenPortFileName="${join(dir, "rsyslog.port")}" ruleset="varco")`,
      `ruleset(name="varco") { action(type="omfile" file="${out()}" template="RSYSLOG_SyslogProtocol23Format") }`,
      "",
    ].join("\n"),
  );
  // -n: stays in the foreground, so it is our child and is stopped by its PID in afterAll.
  rs = execa("rsyslogd", ["-n", "-f", conf, "-i", join(dir, "rsyslog.pid")], { reject: false, all: true });
  rsPid = rs.pid ?? 0;
  const port = await until(() => {
    const f = join(dir, "rsyslog.port");
    if (rs?.exitCode !== null && rs?.exitCode !== undefined) throw new Error("rsyslogd exited");
    return existsSync(f) ? Number(readFileSync(f, "utf8").trim()) || undefined : undefined;
  }, "the rsyslogd port file");

  const kg = await execa("node", [join(ROOT, "bin/varco.mjs"), "audit", "keygen", "--out", join(dir, "seal.state")], { reject: false });
  expect(kg.exitCode).toBe(0);
  h = await startHarness({
    dir,
    extraUsers: ["y01"],
    templateEdit: (t) =>
      t.replace(
        "  state_dir: state\n",
        `  state_dir: state\n  audit_seal_state: seal.state\n  node: gw-syslog\n  audit_checkpoint_interval: 1s\n  audit_syslog: { url: "tcp://127.0.0.1:${port}", app_name: varco-e2e }\n`,
      ),
  });
}, 90_000);

afterAll(async () => {
  await h?.stop();
  if (rsPid > 0) {
    try {
      process.kill(rsPid, "SIGTERM");
    } catch {
      // already gone
    }
    for (let i = 0; i < 50; i++) {
      try {
        process.kill(rsPid, 0);
      } catch {
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    await rs;
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("audit to a remote syslog", () => {
  it("rsyslog receives the login event with its chain hash, and the sealed anchor of a head at or after it", async () => {
    const r = await h?.ssh("y01_vm1", ["echo", "syslog-session"]);
    expect(r?.stdout).toContain("syslog-session");
    const db = join(dir, "state/audit.db");
    const row = await execa("sqlite3", [
      db,
      "SELECT id || ' ' || hash FROM events WHERE type = 'login' AND uid = 'y01' ORDER BY id LIMIT 1",
    ]);
    const [id, hash] = String(row.stdout).trim().split(" ");
    expect(hash).toMatch(/^[0-9a-f]{64}$/);

    // rsyslog parsed it as RFC 5424: authpriv.info (86), our APP-NAME, MSGID login, the SD element intact.
    const loginLine = await until(
      () =>
        received()
          .split("\n")
          .find((l) => l.includes(` login [varco@32473 node="gw-syslog" event_id="${id}" hash="${hash}"]`)),
      "the login event in the syslog file",
    );
    expect(loginLine).toMatch(/^<86>1 \S+ gw-syslog varco-e2e \d+ login \[/);
    const body = JSON.parse(loginLine.slice(loginLine.indexOf("] ") + 2)) as { id: number; hash: string; uid: string; type: string };
    expect(body).toMatchObject({ id: Number(id), hash, uid: "y01", type: "login" });

    // An anchor (authpriv.notice = 85) for a head at or past the login, as in the gateway's log.
    const anchorLine = await until(
      () =>
        received()
          .split("\n")
          .find((l) => {
            const m =
              / anchor \[varco@32473 node="gw-syslog" event_id="(\d+)" hash="([0-9a-f]{64})" epoch="\d+" seal="[0-9a-f]{64}"\]/.exec(l);
            return m && Number(m[1]) >= Number(id) ? l : undefined;
          }),
      "an anchor at or after the login in the syslog file",
    );
    expect(anchorLine).toMatch(/^<85>1 /);
    const anchor = (
      JSON.parse(anchorLine.slice(anchorLine.indexOf("] ") + 2)) as { anchor: { event_id: number; hash: string; seal: string } }
    ).anchor;
    expect(h?.gatewayOutput()).toContain(`"seal":"${anchor.seal}"`);
    const sealed = await execa("sqlite3", [db, `SELECT hash FROM events WHERE id = ${Number(anchor.event_id)}`]);
    expect(String(sealed.stdout).trim()).toBe(anchor.hash);
  }, 60_000);
});
