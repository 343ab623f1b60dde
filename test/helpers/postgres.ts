/**
 * A throwaway PostgreSQL 15 (Debian's `postgresql` package) per test file: `initdb` into a temp
 * folder owned by the `postgres` user, `pg_ctl start` listening on 127.0.0.1 and a free port with
 * its socket in that folder (`-k`), a database and a password role made through that socket. The
 * system cluster is never used or started. Stopped by `pg_ctl stop -m immediate` on the folder,
 * then by the postmaster PID if that did not work; the folder is removed.
 */
import { randomBytes } from "node:crypto";
import { appendFileSync, chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";

const BIN = "/usr/lib/postgresql/15/bin";

export interface TestPostgres {
  /** libpq URL of the test database (role `varco` with a password), over TCP on 127.0.0.1. */
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** Runs SQL as the superuser on the test database (through the socket). */
  psql(sql: string): Promise<string>;
  /** Stops the server (bounded: pg_ctl with a timeout, then SIGKILL by PID). */
  stop(): Promise<void>;
  /** Starts it again after `stop()` (same folder and port). */
  start(): Promise<void>;
  /** Stops it and removes the folder. */
  destroy(): Promise<void>;
}

/** Whether the PostgreSQL binaries and the `postgres` user are there (tests skip otherwise). */
export const havePostgres = existsSync(join(BIN, "initdb")) && process.getuid?.() === 0;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => resolve(typeof a === "object" && a ? a.port : 0));
    });
  });
}

const asPostgres = (cmd: string, args: string[], timeout = 60_000) =>
  execa("runuser", ["-u", "postgres", "--", cmd, ...args], { timeout, cwd: "/" });
/** `asPostgres` inside network namespace `ns`. */
const inNetns =
  (ns: string) =>
  (cmd: string, args: string[], timeout = 60_000) =>
    execa("ip", ["netns", "exec", ns, "runuser", "-u", "postgres", "--", cmd, ...args], { timeout, cwd: "/" });

/**
 * Starts a PostgreSQL server in a new temp folder (run as root). With `netns`, the server runs in
 * that network namespace and listens on `host` there (the URL names `host`); psql still reaches it
 * through its Unix socket in the folder.
 */
export async function startPostgres(o: { netns?: string; host?: string } = {}): Promise<TestPostgres> {
  const host = o.host ?? "127.0.0.1";
  const dir = mkdtempSync(join(tmpdir(), "varco-pg-"));
  chmodSync(dir, 0o700);
  const ids = (await execa("id", ["-u", "postgres"])).stdout.trim();
  const gid = (await execa("id", ["-g", "postgres"])).stdout.trim();
  chownSync(dir, Number(ids), Number(gid));
  const data = join(dir, "data");
  const port = await freePort();
  const password = randomBytes(12).toString("hex");
  await asPostgres(`${BIN}/initdb`, [
    "-D",
    data,
    "--auth-local=trust",
    "--auth-host=scram-sha-256",
    "-U",
    "postgres",
    "--no-sync",
    "-E",
    "UTF8",
  ]);
  // Inside a namespace the clients come from its other hosts: password logins from anywhere there.
  if (o.netns) appendFileSync(join(data, "pg_hba.conf"), "host all all 0.0.0.0/0 scram-sha-256\n");
  const start = async () => {
    await (o.netns ? inNetns(o.netns) : asPostgres)(
      `${BIN}/pg_ctl`,
      [
        "-D",
        data,
        "-l",
        join(dir, "log"),
        "-w",
        "-t",
        "30",
        "-o",
        `-p ${port} -k ${dir} -c listen_addresses=${host} -c fsync=off -c max_connections=50`,
        "start",
      ],
      45_000,
    );
  };
  const psqlAs = async (db: string, sql: string) =>
    (await asPostgres(`${BIN}/psql`, ["-h", dir, "-p", String(port), "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql])).stdout;
  const stop = async () => {
    try {
      await asPostgres(`${BIN}/pg_ctl`, ["-D", data, "-m", "immediate", "-w", "-t", "20", "stop"], 30_000);
    } catch {
      const pidFile = join(data, "postmaster.pid");
      if (existsSync(pidFile)) {
        const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
        if (pid > 0) {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            // Already gone.
          }
        }
      }
    }
  };
  try {
    await start();
    await psqlAs("postgres", `CREATE ROLE varco LOGIN PASSWORD '${password}'`);
    await psqlAs("postgres", "CREATE DATABASE varco OWNER varco");
  } catch (err) {
    await stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    url: `postgres://varco:${password}@${host}:${port}/varco`,
    port,
    dir,
    psql: (sql) => psqlAs("varco", sql),
    stop,
    start,
    async destroy() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
