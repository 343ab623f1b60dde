/**
 * The hostile-input corpus, data driven (≥ 300 cases): user names, codes, policy files, keys,
 * pre-auth garbage. Each case is refused cleanly; after each group the gateway still serves a real
 * OpenSSH login; refused logins leave audit rows; no password, code or secret reaches a log line
 * or an audit row.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { execa } from "execa";
import ssh2 from "ssh2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openAuditStore } from "../../src/audit/index.ts";
import { currentCode, keysFilePath, parseAuthorizedKeys } from "../../src/auth/index.ts";
import { PolicyError, parsePolicyText } from "../../src/policy/index.ts";
import { CODE_PROMPT, PASSWORD_PROMPT } from "../../src/ssh/index.ts";
import { type Harness, ROOT, startHarness } from "../helpers/harness.ts";

let h: Harness;
const TOTP = { issuer: "varco", digits: 6 as const, periodMs: 30_000, window: 1 };
const SERVE_USERS = Array.from({ length: 12 }, (_, i) => `h${String(i).padStart(2, "0")}`);
let served = 0;
const counted = { cases: 0 };

beforeAll(async () => {
  // login_grace 5 s: garbage that leaves ssh2 waiting for more bytes (a half ident line, a truncated
  // packet) is cut by the gateway's timer; the test waits for that, bounded.
  h = await startHarness({ extraUsers: [...SERVE_USERS, "codes"], templateEdit: (t) => t.replace("login_grace: 60s", "login_grace: 5s") });
});

afterAll(async () => {
  await h?.stop();
  console.log(`hostile corpus: ${counted.cases} cases`);
});

/**
 * One login attempt with the ssh2 library (it can send what OpenSSH would not: NUL, 10 kB names).
 * "refused" = authentication failed; "no-route" = authenticated (a real uid with a bogus alias) but
 * no target reached; "reached" = a command ran on a target.
 */
function attempt(username: string, password: string, code: string): Promise<"refused" | "no-route" | "reached"> {
  return new Promise((resolve) => {
    const c = new ssh2.Client();
    let settled = false;
    const done = (r: "refused" | "no-route" | "reached") => {
      if (settled) return;
      settled = true;
      c.end();
      resolve(r);
    };
    c.on("ready", () =>
      c.exec("echo reached-target", (err, ch) => {
        if (err) return done("no-route");
        let out = "";
        ch.on("data", (d: Buffer) => {
          out += d.toString();
        });
        ch.stderr.resume();
        ch.on("close", () => done(out.includes("reached-target") ? "reached" : "no-route"));
      }),
    );
    c.on("error", () => done("refused"));
    c.on("close", () => done("refused"));
    c.on("keyboard-interactive", (_n, _i, _l, prompts, finish) =>
      finish(prompts.map((p) => (p.prompt === PASSWORD_PROMPT ? password : p.prompt === CODE_PROMPT ? code : ""))),
    );
    c.connect({
      host: "127.0.0.1",
      port: h.port,
      username,
      tryKeyboard: true,
      readyTimeout: 15_000,
      authHandler: ["keyboard-interactive"] as never,
    });
  });
}

/** A real OpenSSH login through the gateway, with a fresh user each time (codes are single use). */
async function stillServes(): Promise<void> {
  const uid = SERVE_USERS[served++ % SERVE_USERS.length] as string;
  const r = await h.ssh(`${uid}_vm1`, ["echo alive"]);
  expect(r.stdout).toBe("alive\n");
}

/** Clears a uid's failure count directly in the state DB (the CLI does the same; this is faster per case). */
async function unlockQuick(uid: string): Promise<void> {
  await execa("sqlite3", [join(h.dir, "state/state.db"), `DELETE FROM auth_failures WHERE uid = '${uid.replace(/'/g, "''")}'`]);
}

const marioCode = () => currentCode(TOTP, h.env.secrets.get("mario.rossi") ?? "", Date.now());

const USERNAMES: string[] = [
  ...[
    "*",
    "(",
    ")",
    "\\",
    "\u0000",
    "*)(uid=*",
    "*)(|(uid=*",
    "mario.rossi*",
    "*mario*",
    "mario.rossi)(objectClass=*",
    "m*o.rossi",
    "\\2a",
    "mario.rossi\u0000",
    "(uid=mario.rossi)",
    ")(cn=*))(|(cn=*",
  ].flatMap((n) => [n, `${n}_vm1`, `mario.rossi${n}_vm1`]),
  "a".repeat(10_000),
  `${"a".repeat(10_000)}_vm1`,
  `mario.rossi_${"v".repeat(10_000)}`,
  "mаrio.rossi_vm1", // Cyrillic а
  "mario.rоssi_vm1", // Cyrillic о
  "ｍａｒｉｏ.rossi_vm1", // full width
  "mario.rossi\u200b_vm1", // zero width space
  // "MARIO.ROSSI_vm1" and "Mario.Rossi_vm1" are mario.rossi to the directory, so they are mario:
  // they log in as the canonical uid (test/e2e/identity.test.ts). Spaces of other kinds are not.
  "mario.rossi\u00a0_vm1",
  "mario.rossi_vm1\r",
  "mario.rossi _vm1",
  " mario.rossi_vm1",
  "mario.rossi_vm1 ",
  "mario\trossi_vm1",
  "mario.rossi\n_vm1",
  "../mario.rossi_vm1",
  "../../etc/passwd_vm1",
  "mario.rossi/../anna.bianchi_vm1",
  "..",
  "../",
  "./mario.rossi_vm1",
  "",
  " ",
  "_",
  "__",
  "_vm1",
  "mario.rossi__vm1",
  "mario.rossi_vm1_",
  "%00",
  "mario.rossi%5f_vm1",
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a log4shell-style name, on purpose
  "${jndi:ldap://x}_vm1",
  "$(id)_vm1",
  "`id`_vm1",
  "mario.rossi;id_vm1",
  "'; DROP TABLE events; --_vm1",
  "\u202emario.rossi_vm1",
  "mario.rossi\u0301_vm1",
  "🦊_vm1",
  // The same metacharacters around another real user's name and a group alias.
  ...["*", "(", ")", "\\", "\u0000", "*)(uid=*", "|", "&", "!", "=", "~=", ">=", "<=", ":1.2.840.113556.1.4.803:=", "\\00"].flatMap((m) => [
    `anna.bianchi${m}_shared`,
    `${m}anna.bianchi_shared`,
    `anna${m}bianchi_vm2`,
  ]),
];

const outcomes = { refused: 0, noRoute: 0 };
describe("hostile user names (mario's real password and a current code)", () => {
  it.each(USERNAMES.map((u) => [JSON.stringify(u).slice(0, 60), u]))("%s reaches no target", async (_label, username) => {
    counted.cases++;
    const r = await attempt(username, "mario-demo-pw", marioCode());
    expect(r).not.toBe("reached");
    if (r === "refused") outcomes.refused++;
    else outcomes.noRoute++;
  });
  it("still serves a real login; every refused login is audited, and so is every refused route", async () => {
    await stillServes();
    const store = openAuditStore(join(h.dir, "state/audit.db"));
    const events = store.allEvents();
    store.close();
    expect(events.filter((e) => e.type === "login_refused").length).toBeGreaterThanOrEqual(outcomes.refused);
    // Only real uids with a bogus alias authenticate (then get no route): mario.rossi_<10 kB alias>.
    expect(outcomes.noRoute).toBeLessThanOrEqual(1);
    expect(events.filter((e) => e.type === "route_refused" && e.uid === "mario.rossi").length).toBe(outcomes.noRoute);
  });
});

const CODES: Array<(c: string) => string> = [
  () => "",
  () => " ",
  () => "000000",
  () => "abcdef",
  () => "12345",
  () => "1234567",
  (c) => `${c}0`,
  (c) => `0${c}`,
  (c) => c.slice(0, 5),
  (c) => `${c.slice(0, 3)} ${c.slice(3)}`,
  (c) => `${c.slice(0, 3)}-${c.slice(3)}`,
  (c) => c.replace(/\d/g, (d) => String.fromCharCode(0x0660 + Number(d))), // Arabic-Indic digits
  (c) => c.replace(/\d/g, (d) => String.fromCharCode(0xff10 + Number(d))), // full-width digits
  (c) => `${c}\u0000`,
  (c) => `\u0000${c}`,
  (c) => `${c}\n${c}`,
  (c) => c.split("").reverse().join(""),
  (c) => String((Number(c) + 1) % 1_000_000).padStart(6, "0"),
  () => "9".repeat(10_000),
  () => "-1",
  () => "1e5",
  () => "0x1f",
  () => "NaN",
  () => "null",
  () => "******",
  () => "aaaa-bbbb",
  () => "abcd-efgh",
  () => "000000\r",
  // One digit off in each position, and the right code of somebody else.
  ...[0, 1, 2, 3, 4, 5].map((pos) => (c: string) => c.slice(0, pos) + String((Number(c[pos]) + 5) % 10) + c.slice(pos + 1)),
  () => currentCode(TOTP, h.env.secrets.get("mario.rossi") ?? "", Date.now()),
  () => currentCode(TOTP, h.env.secrets.get("anna.bianchi") ?? "", Date.now()),
  (c) => c.padStart(8, "0"),
  (c) => ` ${c.slice(0, 5)}`,
];

describe("hostile codes (right password, wrong code)", () => {
  it.each(CODES.map((f, i) => [i, f]))("code case %i is refused", async (_i, make) => {
    counted.cases++;
    const code = currentCode(TOTP, h.env.secrets.get("codes") ?? "", Date.now());
    expect(await attempt("codes_vm1", "codes-pw", make(code))).toBe("refused");
    // Right password, wrong code: the lockout would lock "codes" after 5; forget the count so each case tests the code.
    await unlockQuick("codes");
  });
  it("a code replayed in the same step is refused", async () => {
    counted.cases++;
    const code = h.nextCode("h11");
    expect((await h.ssh("h11_vm1", ["true"], { code })).exitCode).toBe(0);
    expect((await h.ssh("h11_vm1", ["true"], { code })).exitCode).toBe(255);
    // The lockout counters of "codes" must not keep a real user out: unlock it for later runs.
    await execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, "user", "unlock", "codes"]);
    await stillServes();
  });
});

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz";
const GOOD = `version: 1
gateway: { listen: ["127.0.0.1:2222"] }
directory: { ldap: { url: "ldap://127.0.0.1", bind_dn: cn=a, bind_password_file: pw, user_base: ou=p } }
targets: { t: { host: 10.0.0.1, host_key: "${KEY}" } }
routes: [ { users: [u], alias: t, target: t } ]
`;
const bomb = (levels: number) => {
  let s = 'a0: &a0 ["x","x","x","x","x","x","x","x","x"]\n';
  for (let i = 1; i < levels; i++)
    s += `a${i}: &a${i} [${Array(9)
      .fill(`*a${i - 1}`)
      .join(",")}]\n`;
  return `${GOOD}bomb: [${Array(9)
    .fill(`*a${levels - 1}`)
    .join(",")}]\n${s}`;
};
const FIELDS: Array<[string, string]> = [
  ["version: 1", "version: 2"],
  ["version: 1", 'version: "1"'],
  ["version: 1", "version: [1]"],
  ['listen: ["127.0.0.1:2222"]', "listen: 127.0.0.1:2222"],
  ['listen: ["127.0.0.1:2222"]', 'listen: ["127.0.0.1"]'],
  ['listen: ["127.0.0.1:2222"]', 'listen: ["127.0.0.1:99999"]'],
  ['listen: ["127.0.0.1:2222"]', 'listen: ["999.0.0.1:22"]'],
  ['listen: ["127.0.0.1:2222"]', "listen: []"],
  ['url: "ldap://127.0.0.1"', 'url: "http://127.0.0.1"'],
  ['url: "ldap://127.0.0.1"', "url: 5"],
  ["bind_dn: cn=a", "bind_dn: ''"],
  ["bind_password_file: pw", "bind_password_file: ''"],
  ["bind_password_file: pw", "bind_password: hunter2"],
  ["user_base: ou=p", "user_base: [ou=p]"],
  ["host: 10.0.0.1", "host: ''"],
  ["host: 10.0.0.1", "host: 10.0.0.1, port: 0"],
  ["host: 10.0.0.1", "host: 10.0.0.1, port: -1"],
  ["host: 10.0.0.1", "host: 10.0.0.1, port: 22.5"],
  ["host: 10.0.0.1", 'host: 10.0.0.1, port: "22"'],
  [`host_key: "${KEY}"`, 'host_key: "ssh-ed25519"'],
  [`host_key: "${KEY}"`, 'host_key: "ssh-dss AAAAB3NzaC1kc3MAAACBAP"'],
  [`host_key: "${KEY}"`, 'host_key: "AAAAC3NzaC1lZDI1NTE5AAAAIFm6"'],
  [`host_key: "${KEY}"`, 'host_key: "ssh-ed25519 !!!notbase64!!!"'],
  [`host_key: "${KEY}"`, "host_key: 42"],
  [`host_key: "${KEY}"`, 'host_key: "-----BEGIN CERTIFICATE-----"'],
  [`host_key: "${KEY}"`, 'host_key: "ssh-ed25519-cert-v01@openssh.com AAAA"'],
  ["users: [u]", "users: u"],
  ["users: [u]", "users: []"],
  ["alias: t,", "alias: t_x,"],
  ["alias: t,", "alias: '',"],
  ["alias: t,", "alias: ../t,"],
  ["target: t }", "target: nowhere }"],
  ["routes: [", "routes: {"],
  ["targets: {", "targets: ["],
  ["gateway:", "gateway_typo:"],
  ["version: 1", "version: 1\nversion: 1"],
  ["version: 1", "version: 1\nextra_key: 1"],
  ["version: 1", "version: 1\nauth: { chains: [] }"],
  ["version: 1", "version: 1\nauth: { chains: [[sms]] }"],
  ["version: 1", "version: 1\nauth: { totp: { digits: 9 } }"],
  ["version: 1", "version: 1\nauth: { totp: { period: 30 } }"],
  ["version: 1", "version: 1\nauth: { totp: { window: -1 } }"],
  ["version: 1", "version: 1\nauth: { lockout: { within: forever } }"],
  ["version: 1", "version: 1\nauth: { totp: { secrets: ldap } }"],
  ["version: 1", "version: 1\nnetwork: { public_interface: eth0, public_ip: 1.2.3 }"],
  [
    "version: 1",
    "version: 1\nnetwork: { public_interface: eth0, public_ip: 203.0.113.1, private_networks: [10.0.0.0/8], vips: [ { instance: x, interface: eth0, virtual_router_id: 0, addresses: [203.0.113.2/24] } ] }",
  ],
  [
    "version: 1",
    "version: 1\nnetwork: { public_interface: eth0, public_ip: 203.0.113.1, private_networks: [10.0.0.0/8], port_forwards: [ { name: a, external_ip: 203.0.113.1, external_port: 1, internal_ip: 8.8.8.8, internal_port: 1 } ] }",
  ],
  // IPv6 is supported; one entry mixing the families is not.
  [
    "version: 1",
    'version: 1\nnetwork: { public_interface: eth0, public_ip: 203.0.113.1, private_networks: [10.0.0.0/8, "fd00::/8"], forward_allow: [ { name: m, from: [10.0.0.1], to: ["fd00::1"], ports: [22] } ] }',
  ],
  [
    "version: 1",
    "version: 1\nnetwork: { public_interface: eth0, public_ip: 203.0.113.1, bridges: [ { name: waytoolonginterfacename0 } ] }",
  ],
  ["version: 1", "version: 1\nnetwork: { public_interface: eth0, public_ip: 203.0.113.1, bridges: [ { name: br0, vlan: 4095 } ] }"],
  ["version: 1", "version: 1\ngateway: {}"],
  ["version: 1", "version: 1\n\t bad indentation"],
  ["version: 1", "version: 1\n: no key"],
  ["version: 1", "version: 1\nkey: [unclosed"],
  ["version: 1", "version: 1\nkey: 'unclosed"],
  ["version: 1", "%YAML 9.9\n---\nversion: 1"],
  ["version: 1", "version: 1\n--- \nsecond: document"],
  ["version: 1", "version: !!binary aGVsbG8="],
  ["version: 1", "version: &x 1\nbad: *y"],
  // Every route and target key with a wrong type.
  ...["users: [u]", "alias: t,", "target: t }", "host: 10.0.0.1"].flatMap((kv): Array<[string, string]> => {
    const key = kv.split(":")[0] as string;
    const tail = kv.endsWith(",") ? "," : kv.endsWith(" }") ? " }" : "";
    return [`${key}: 1${tail}`, `${key}: true${tail}`, `${key}: null${tail}`, `${key}: {a: 1}${tail}`].map((bad): [string, string] => [
      kv,
      bad,
    ]);
  }),
  ...["max_sessions", "max_unauthenticated", "login_grace", "idle_timeout"].flatMap(
    (k): Array<[string, string]> => [
      ['listen: ["127.0.0.1:2222"]', `listen: ["127.0.0.1:2222"], limits: { ${k}: -5 }`],
      ['listen: ["127.0.0.1:2222"]', `listen: ["127.0.0.1:2222"], limits: { ${k}: "lots" }`],
    ],
  ),
];

describe("hostile policy files", () => {
  it.each(FIELDS.map(([from, to], i) => [i, from, to]))("policy case %i is rejected with file:line:col", (_i, from, to) => {
    counted.cases++;
    const text = GOOD.replace(from, to);
    expect(text).not.toBe(GOOD);
    let err: unknown;
    try {
      parsePolicyText(text, "/p/gateway.yaml");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PolicyError);
    for (const line of (err as Error).message.split("\n")) expect(line).toMatch(/^\/p\/gateway\.yaml:\d+:\d+: .+/);
    expect((err as Error).message).not.toContain("hunter2");
  });

  it.each([3, 5, 8].map((n) => [n]))("a YAML alias bomb of %i levels is rejected", (levels) => {
    counted.cases++;
    expect(() => parsePolicyText(bomb(levels), "/p/gateway.yaml")).toThrow(PolicyError);
  });

  it("a 50 MB policy file is refused unread, and a gateway with a world-readable secret file refuses to start", async () => {
    counted.cases += 2;
    const big = join(h.dir, "big.yaml");
    writeFileSync(big, Buffer.alloc(50 * 1024 * 1024, "#"));
    const r = await execa("node", [join(ROOT, "bin/varco.mjs"), "policy", "check", big], { reject: false });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/big\.yaml:1:1: the policy file is 52428800 bytes; the limit is/);

    const pw = join(h.dir, "secrets/ldap.pw");
    chmodSync(pw, 0o644);
    const serve = await execa("node", [join(ROOT, "bin/varco.mjs"), "serve", "--policy", h.env.policyFile], {
      reject: false,
      timeout: 30_000,
    });
    chmodSync(pw, 0o600);
    expect(serve.exitCode).toBe(1);
    expect(serve.stderr).toContain("readable by group or others; run: chmod 600");
    expect(serve.stderr).not.toContain(readFileSync(pw, "utf8").trim());
  });
});

describe("malformed keys", () => {
  const lines = [
    "",
    "# comment",
    "ssh-ed25519",
    "ssh-ed25519 AAAA",
    "ssh-ed25519 !!!!",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQ",
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    `${KEY.split(" ")[1]} ssh-ed25519`,
    "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29t",
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAI",
    "\u0000\u0001\u0002",
    "x".repeat(100_000),
  ];
  it.each(lines.map((l, i) => [i, l]))("authorized key line %i is skipped, never thrown on", (_i, line) => {
    counted.cases++;
    expect(() => parseAuthorizedKeys([line])).not.toThrow();
    expect(parseAuthorizedKeys([line])).toHaveLength(0);
  });
  it.each(["../etc/passwd", "a/b", "..", "a..b", "", "x\u0000y", "~root"].map((u) => [u]))("keys_file path refuses uid %j", (uid) => {
    counted.cases++;
    expect(keysFilePath("/keys/{uid}.pub", uid)).toBeUndefined();
  });
});

/** Sends raw bytes to the gateway and waits until it closes the connection (bounded, 20 s). */
function raw(bytes: Buffer | string, opts: { identFirst?: boolean } = {}): Promise<"closed"> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port: h.port });
    const t = setTimeout(() => reject(new Error("the gateway kept a garbage connection open past login_grace")), 15_000);
    s.on("connect", () => {
      if (opts.identFirst) s.write("SSH-2.0-hostile\r\n");
      s.write(bytes);
    });
    s.on("data", () => undefined);
    s.on("error", () => undefined);
    s.on("close", () => {
      clearTimeout(t);
      resolve("closed");
    });
  });
}

const GARBAGE: Array<[string, Buffer | string, boolean]> = [
  ["random bytes", randomBytes(4096), false],
  ["HTTP request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false],
  ["TLS client hello", Buffer.from("160301020001000100030300", "hex"), false],
  ["SSH-1.5 ident", "SSH-1.5-old\r\n", false],
  ["overlong ident", `SSH-2.0-${"x".repeat(300)}\r\n`, false],
  ["NUL in ident", "SSH-2.0-a\u0000b\r\n", false],
  ["only CR LF", "\r\n".repeat(2000), false],
  ["packet length 0xffffffff", Buffer.from("ffffffff00", "hex"), true],
  ["packet length 0", Buffer.from("0000000000", "hex"), true],
  ["packet length 35000+", Buffer.concat([Buffer.from("00100000", "hex"), randomBytes(64)]), true],
  ["truncated packet", Buffer.from("0000001c0a14", "hex"), true],
  ["padding longer than packet", Buffer.from("00000010ff", "hex"), true],
  ["random after ident", randomBytes(8192), true],
  ["KEXINIT garbage", Buffer.concat([Buffer.from("000000640414", "hex"), randomBytes(100)]), true],
  ["disconnect message", Buffer.from("0000000c0a01000000020000000000000000", "hex"), true],
  ...[64, 255, 256, 1000, 4096, 16_384, 35_000, 65_536, 262_144, 1_048_576].map((n): [string, Buffer, boolean] => [
    `${n} random bytes after the ident`,
    randomBytes(n),
    true,
  ]),
  ["ident then an oversized packet", Buffer.concat([Buffer.from("7fffffff", "hex"), randomBytes(1024)]), true],
  ["ident then a NUL flood", Buffer.alloc(100_000), true],
];

describe("pre-auth garbage", () => {
  it.each(GARBAGE.map(([name, bytes, ident]) => [name, bytes, ident]))(
    "%s: the gateway closes the connection",
    async (_name, bytes, ident) => {
      counted.cases++;
      expect(await raw(bytes as Buffer, { identFirst: ident as boolean })).toBe("closed");
    },
  );

  it("a client retrying auth a thousand times on one connection is cut off after max_auth_attempts", async () => {
    counted.cases++;
    let rounds = 0;
    const result = await new Promise<string>((resolve) => {
      const c = new ssh2.Client();
      c.on("ready", () => resolve("accepted"));
      c.on("error", () => resolve("refused"));
      c.on("close", () => resolve("closed"));
      c.on("keyboard-interactive", (_n, _i, _l, prompts, finish) => {
        rounds++;
        finish(prompts.map(() => "wrong"));
      });
      c.connect({
        host: "127.0.0.1",
        port: h.port,
        username: "h00_vm1",
        tryKeyboard: true,
        readyTimeout: 20_000,
        authHandler: (_methods, _partial, next) => {
          if (rounds >= 1000) return next(false as never);
          next("keyboard-interactive" as never);
        },
      } as ssh2.ConnectConfig);
    });
    expect(result).not.toBe("accepted");
    expect(rounds).toBeLessThanOrEqual(6);
    await execa("node", [join(ROOT, "bin/varco.mjs"), "--policy", h.env.policyFile, "user", "unlock", "h00"]);
    await stillServes();
  });
});

describe("no secret anywhere", () => {
  it("finds no password, TOTP secret or code of the run in any log line or audit row", async () => {
    await stillServes();
    const secrets = [...h.env.users.map((u) => u.password), ...h.env.secrets.values(), "hunter2"];
    const out = h.gatewayOutput();
    const dump = await execa("sqlite3", [join(h.dir, "state/audit.db"), ".dump"]);
    const state = String(dump.stdout);
    for (const s of secrets) {
      expect(out).not.toContain(s);
      expect(state).not.toContain(s);
    }
    // Codes typed during the run (the current ones for every user): never logged.
    for (const [uid, secret] of h.env.secrets) {
      for (const offset of [-1, 0, 1]) {
        const code = currentCode(TOTP, secret, Date.now() + offset * 30_000);
        expect(out, `code of ${uid}`).not.toMatch(new RegExp(`"${code}"`));
      }
    }
    expect(counted.cases).toBeGreaterThanOrEqual(300);
  });
});
