/**
 * Answers for auditors, end to end: real sessions through the OpenSSH client (commands, scp and
 * sftp transfers, a recorded shell), then the real CLI: `audit list` by alias and by target name
 * with paging and its "more" line, `audit search` over commands, paths and recorded output,
 * `audit export` filters, --after-id resume and --follow, every exported event checked against
 * `audit schema`, and `audit replay` refusing an edited recording.
 */
import { appendFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openAuditStore } from "../../src/audit/store.ts";
import { type Harness, ROOT, startHarness } from "../helpers/harness.ts";

let h: Harness;
const varco = (...args: string[]) => execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, ...args], { reject: false });
const lines = (out: unknown) =>
  String(out)
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);

/** `audit list --json`: one document. */
const sessionList = (r: { stdout: unknown }) =>
  JSON.parse(String(r.stdout)) as {
    sessions: Array<Record<string, unknown>>;
    total: number;
    offset: number;
    more: number;
    next_offset: number | null;
  };

async function closedSessions(uid: string, n: number): Promise<Array<Record<string, unknown>>> {
  for (let i = 0; i < 100; i++) {
    const rows = sessionList(await varco("audit", "list", "--json", "--user", uid)).sessions;
    if (rows.length >= n && rows.every((r) => r.result !== "open")) return rows;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`sessions of ${uid} never closed`);
}

let remote: string;
beforeAll(async () => {
  h = await startHarness({ extraUsers: ["q01", "q02", "q03"] });
  remote = join(h.dir, "answers-remote");
  const local = join(h.dir, "answers-local");
  mkdirSync(remote, { recursive: true });
  mkdirSync(local, { recursive: true });
  writeFileSync(join(local, "answers-scp-path.bin"), "scp payload\n");
  writeFileSync(join(local, "answers-sftp-path.bin"), "sftp payload\n");

  expect((await h.ssh("q01_vm1", ["echo unique-needle-7731"])).exitCode).toBe(0);
  const cm = await h.master("q01_vm1");
  const P = cm.map((o) => (o === "-p" ? "-P" : o));
  expect(
    (await execa("scp", ["-O", ...P, join(local, "answers-scp-path.bin"), `q01_vm1@127.0.0.1:${remote}/`], { reject: false })).exitCode,
  ).toBe(0);
  const sftp = await execa("sftp", ["-b", "-", ...P, "q01_vm1@127.0.0.1"], {
    input: `put ${local}/answers-sftp-path.bin ${remote}/answers-sftp-path.bin\n`,
    reject: false,
  });
  expect(sftp.exitCode).toBe(0);
  await execa("ssh", [...cm, "-O", "exit", "q01_vm1@127.0.0.1"], { reject: false });

  // The marker is computed by the shell, so the echoed input line does not contain it.
  await execa("ssh", [...h.sshOptions(["-tt"]), "q02_vm1@127.0.0.1"], {
    env: { ...h.askpassEnv("q02-pw", h.nextCode("q02")), TERM: "xterm" },
    input: "echo REC$((40+2))MARK-q02\nexit\n",
    reject: false,
  });
  expect((await h.ssh("q03_vm2", ["true"])).exitCode).toBe(0);
  expect((await h.ssh("q03_vm2", ["true"])).exitCode).toBe(0);
  await closedSessions("q01", 2);
  await closedSessions("q02", 1);
  await closedSessions("q03", 2);
}, 120_000);

afterAll(async () => {
  await h?.stop();
});

describe("audit list", () => {
  it("--target matches the route alias and the target name, exactly", async () => {
    const users = async (t: string) =>
      new Set(sessionList(await varco("audit", "list", "--json", "--target", t)).sessions.map((r) => r.uid));
    const byAlias = await users("vm1");
    expect(byAlias.has("q01") && byAlias.has("q02")).toBe(true);
    expect(byAlias.has("q03")).toBe(false);
    expect(await users("vm1-mario")).toEqual(byAlias);
    const vm2 = await users("vm2-anna");
    expect([...vm2]).toEqual(["q03"]);
    expect(await users("vm2")).toEqual(vm2);
    expect((await users("VM2")).size).toBe(0);
    expect((await users("vm%")).size).toBe(0);
  });

  it("pages with --limit/--offset and says how many more there are (text and JSON)", async () => {
    const first = await varco("audit", "list", "--user", "q03", "--limit", "1");
    expect(first.exitCode).toBe(0);
    const out = String(first.stdout).split("\n");
    expect(out).toHaveLength(3); // header, one row, the "more" line
    expect(out[2]).toMatch(/^… 1 more; use --limit\/--offset/);
    const second = await varco("audit", "list", "--user", "q03", "--limit", "1", "--offset", "1");
    expect(String(second.stdout).split("\n")).toHaveLength(2);
    expect(String(second.stdout)).not.toContain("more");
    const json = sessionList(await varco("audit", "list", "--json", "--user", "q03", "--limit", "1"));
    expect(json.sessions).toHaveLength(1);
    expect(json.sessions[0]).toHaveProperty("up_bytes");
    expect(json.sessions[0]).not.toHaveProperty("upBytes");
    expect({ ...json, sessions: undefined }).toEqual({ sessions: undefined, total: 2, offset: 0, more: 1, next_offset: 1 });
    const last = sessionList(await varco("audit", "list", "--json", "--user", "q03", "--limit", "1", "--offset", "1"));
    expect([last.more, last.next_offset]).toEqual([0, null]);
    expect((await varco("audit", "list", "--limit", "0")).exitCode).toBe(2);
    expect((await varco("audit", "list", "--limit", "1;2")).exitCode).toBe(2);
  });
});

describe("audit search", () => {
  const search = async (text: string) => {
    const r = await varco("audit", "search", text, "--json");
    expect(r.exitCode, String(r.stderr)).toBe(0);
    return (JSON.parse(String(r.stdout)) as { hits: Array<Record<string, unknown>> }).hits;
  };
  it("finds the command, the transfer paths and the recorded output, naming session, time, user and kind", async () => {
    const [q01] = await closedSessions("q01", 2);
    const cmd = await search("unique-needle-7731");
    expect(cmd).toContainEqual(expect.objectContaining({ kind: "command", uid: "q01", snippet: "echo unique-needle-7731" }));
    expect(cmd[0]?.ts).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(typeof cmd[0]?.session_id).toBe("string");
    expect((await search("answers-scp-path")).map((x) => x.kind)).toContain("path");
    expect((await search("answers-sftp-path")).filter((x) => x.kind === "path" && x.uid === "q01").length).toBeGreaterThan(0);
    const rec = await search("REC42MARK-q02");
    expect(rec).toEqual([expect.objectContaining({ kind: "recording", uid: "q02" })]);
    expect(q01).toBeDefined();
    // Text mode: a table; FTS syntax is taken literally; too short is a usage error.
    const text = await varco("audit", "search", "unique-needle");
    expect(String(text.stdout)).toMatch(/command\s+echo unique-needle-7731/);
    expect(await search('needle" OR "REC42')).toEqual([]);
    expect((await varco("audit", "search", "ab")).exitCode).toBe(2);
  });
});

/** A validator for the subset of JSON Schema 2020-12 that `audit schema` uses. */
function validate(schema: Record<string, unknown>, root: Record<string, unknown>, v: unknown, at = "$"): string[] {
  const errs: string[] = [];
  if (typeof schema.$ref === "string") {
    const name = schema.$ref.replace("#/$defs/", "");
    return validate((root.$defs as Record<string, Record<string, unknown>>)[name] ?? {}, root, v, at);
  }
  const typeOf = (x: unknown) => (x === null ? "null" : Array.isArray(x) ? "array" : Number.isInteger(x) ? "integer" : typeof x);
  if (schema.type !== undefined) {
    const types = ([] as string[]).concat(schema.type as string | string[]);
    const t = typeOf(v);
    if (!types.includes(t) && !(t === "integer" && types.includes("number"))) errs.push(`${at}: ${t} is not ${types.join("|")}`);
  }
  if ("const" in schema && v !== schema.const) errs.push(`${at}: not ${String(schema.const)}`);
  if (Array.isArray(schema.enum) && !schema.enum.includes(v)) errs.push(`${at}: ${String(v)} not in enum`);
  if (typeof schema.pattern === "string" && typeof v === "string" && !new RegExp(schema.pattern, "u").test(v)) errs.push(`${at}: pattern`);
  if (typeof schema.minimum === "number" && typeof v === "number" && v < schema.minimum) errs.push(`${at}: below minimum`);
  if (typeOf(v) === "object") {
    const o = v as Record<string, unknown>;
    for (const k of (schema.required as string[] | undefined) ?? []) if (!(k in o)) errs.push(`${at}: missing ${k}`);
    const props = (schema.properties as Record<string, Record<string, unknown>> | undefined) ?? {};
    for (const [k, sub] of Object.entries(props)) if (k in o) errs.push(...validate(sub, root, o[k], `${at}.${k}`));
    if (schema.additionalProperties === false) for (const k of Object.keys(o)) if (!(k in props)) errs.push(`${at}: extra ${k}`);
    for (const part of (schema.allOf as Array<Record<string, Record<string, unknown>>> | undefined) ?? []) {
      const cond = part.if ? validate(part.if, root, v, at).length === 0 : true;
      if (cond && part.then) errs.push(...validate(part.then, root, v, at));
    }
  }
  return errs;
}

const camel = (v: unknown): string[] =>
  Array.isArray(v)
    ? v.flatMap(camel)
    : v && typeof v === "object"
      ? Object.entries(v).flatMap(([k, x]) => [...(/[A-Z]/.test(k) ? [k] : []), ...camel(x)])
      : [];

describe("audit export and schema", () => {
  it("every exported event validates against `audit schema`, snake_case, with one transfer shape", async () => {
    const schemaOut = await varco("audit", "schema");
    expect(schemaOut.exitCode).toBe(0);
    const schema = JSON.parse(String(schemaOut.stdout)) as Record<string, unknown>;
    expect(schema.$schema).toBe("https://json-schema.org/draft/2020-12/schema");
    expect(String(schema.$id)).toMatch(/v1$/);
    const events = lines((await varco("audit", "export", "--format", "jsonl")).stdout);
    expect(events.length).toBeGreaterThan(10);
    for (const e of events) expect(validate(schema, schema, e), JSON.stringify(e)).toEqual([]);
    expect(camel(events)).toEqual([]);
    // The validator is not a rubber stamp.
    const { source: _dropped, ...noSource } = events[0] as Record<string, unknown>;
    expect(validate(schema, schema, noSource)).not.toEqual([]);
    expect(validate(schema, schema, { ...events[0], type: "file" })).toContain("$: missing transfer");
    const files = events.filter((e) => e.type === "file");
    const protocols = new Set(files.map((e) => (e.transfer as { protocol: string }).protocol));
    expect(protocols).toEqual(new Set(["scp", "sftp"]));
    expect(files.map((e) => e.transfer)).toContainEqual(
      expect.objectContaining({ protocol: "scp", direction: "upload", path: expect.stringContaining("answers-scp-path.bin"), bytes: 12 }),
    );
    expect(files.map((e) => e.transfer)).toContainEqual(
      expect.objectContaining({ protocol: "sftp", direction: "upload", path: `${remote}/answers-sftp-path.bin`, bytes: 13 }),
    );
    // Session fields are on every event of a session, even those written without them.
    for (const e of events.filter((x) => x.session_id))
      expect([typeof e.uid, typeof e.account, typeof e.source, typeof e.node]).toEqual(["string", "string", "string", "string"]);
  });

  it("filters by --type, --user, --target (alias), --since/--until and resumes with --after-id", async () => {
    const execs = lines((await varco("audit", "export", "--type", "exec", "--user", "q01")).stdout);
    expect(execs.length).toBeGreaterThan(0);
    expect(execs.every((e) => e.type === "exec" && e.uid === "q01")).toBe(true);
    const two = lines((await varco("audit", "export", "--type", "exec,file", "--target", "vm2")).stdout);
    expect(two.length).toBeGreaterThan(0);
    expect(two.every((e) => e.uid === "q03" && (e.type === "exec" || e.type === "file"))).toBe(true);
    expect(lines((await varco("audit", "export", "--until", "2000-01-01")).stdout)).toEqual([]);
    expect(lines((await varco("audit", "export", "--since", "2000-01-01")).stdout).length).toBeGreaterThan(0);
    const all = lines((await varco("audit", "export")).stdout);
    const mid = Number(all[Math.floor(all.length / 2)]?.id);
    const rest = lines((await varco("audit", "export", "--after-id", String(mid))).stdout);
    expect(rest.map((e) => e.id)).toEqual(all.filter((e) => Number(e.id) > mid).map((e) => e.id));
    expect((await varco("audit", "export", "--after-id", "-1")).exitCode).toBe(2);
    expect((await varco("audit", "export", "--format", "csv")).exitCode).toBe(2);
  });

  it("--follow prints a new event within 3 s and on SIGTERM stops with the last id on stderr", async () => {
    const all = lines((await varco("audit", "export")).stdout);
    const head = Number(all[all.length - 1]?.id);
    const child = execa(
      "node",
      [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, "audit", "export", "--follow", "--after-id", String(head)],
      {
        reject: false,
      },
    );
    let out = "";
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
    });
    try {
      await new Promise((r) => setTimeout(r, 2500)); // started and polling
      expect(out).toBe("");
      const store = openAuditStore(join(h.dir, "state/audit.db"));
      store.append({ type: "lock", uid: "q-follow", result: "ok", data: { by: "test" } });
      store.close();
      const t0 = Date.now();
      while (!out.includes("q-follow") && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 50));
      expect(Date.now() - t0).toBeLessThan(3000);
      const ev = lines(out)[0] as { id: number; uid: string };
      expect(ev.uid).toBe("q-follow");
      child.kill("SIGTERM");
      const r = await child;
      expect(r.exitCode).toBe(0);
      expect(String(r.stderr)).toContain(`last id ${ev.id} (resume with --after-id ${ev.id})`);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });
});

describe("audit replay", () => {
  it("plays a recording whose hash matches the chained one and refuses an edited one unless --force", async () => {
    const [s] = await closedSessions("q02", 1);
    const id = String(s?.id);
    const ok = await varco("audit", "replay", id.slice(0, 8), "--speed", "100");
    expect(ok.exitCode, String(ok.stderr)).toBe(0);
    expect(String(ok.stdout)).toContain("REC42MARK-q02");
    const show = JSON.parse(String((await varco("audit", "show", id, "--json")).stdout)) as { recordings: Array<{ path: string }> };
    const path = show.recordings[0]?.path ?? "";
    appendFileSync(path, `[99.0,"o","forged-line\\r\\n"]\n`);
    const refused = await varco("audit", "replay", id, "--speed", "100");
    expect(refused.exitCode).toBe(1);
    expect(String(refused.stdout)).not.toContain("forged-line");
    expect(String(refused.stderr)).toMatch(/SHA-256 differs .*refusing to play it/);
    const forced = await varco("audit", "replay", id, "--speed", "100", "--force");
    expect(forced.exitCode).toBe(0);
    expect(String(forced.stdout)).toContain("forged-line");
    expect(String(forced.stderr)).toContain("playing it anyway");
  });
});
