/**
 * A throwaway OpenLDAP slapd on loopback (back_mdb, inetOrgPerson/posixGroup), for the demo and tests.
 * Started in the foreground (`-d 0`) so its PID is ours; stopped by that PID.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { freePort, waitForPort } from "./ports.ts";

export interface DemoUser {
  readonly uid: string;
  readonly password: string;
  /**
   * Extra attributes for the entry (e.g. a TOTP secret in the attribute auth.totp.ldap_attribute names);
   * an array gives several values. Operational attributes (pwdAccountLockedTime) go in through slapadd too.
   */
  readonly attributes?: Readonly<Record<string, string | readonly string[]>>;
  /** Auxiliary object classes besides inetOrgPerson (e.g. shadowAccount, or one from `schema`). */
  readonly objectClasses?: readonly string[];
  readonly givenName: string;
  readonly sn: string;
}

export interface DemoGroup {
  readonly cn: string;
  readonly gid: number;
  readonly members: readonly string[];
}

export interface SlapdOptions {
  readonly dir: string;
  /** Serve TLS: `ldaps://` on `tlsPort` and StartTLS on the plain port, with this certificate. */
  readonly tls?: { readonly certFile: string; readonly keyFile: string; readonly caFile: string } | undefined;
  /** Groups as groupOfNames with the memberof overlay (how Active Directory's memberOf looks). */
  readonly memberOf?: boolean;
  readonly users: readonly DemoUser[];
  readonly groups: readonly DemoGroup[];
  /** Password of the service account cn=varco,ou=services,<suffix>. */
  readonly servicePassword: string;
  readonly suffix?: string;
  readonly port?: number;
  /** Listen address (default 127.0.0.1). */
  readonly host?: string;
  /** Run inside this network namespace (ip netns exec). */
  readonly netns?: string;
  /**
   * Load the ppolicy overlay (slapo-ppolicy(5); in 2.5 its schema is built into the module) with a
   * default policy `cn=default,ou=policies,<suffix>`: pwdLockout TRUE after `maxFailure` failed binds
   * (default 3), pwdLockoutDuration 0 (locked until an administrator deletes pwdAccountLockedTime).
   */
  readonly ppolicy?: { readonly maxFailure?: number } | undefined;
  /** Extra schema text (slapd.conf attributetype/objectclass lines), included after the stock schemas. */
  readonly schema?: string | undefined;
}

export interface Slapd {
  readonly url: string;
  /** `ldaps://127.0.0.1:PORT` when started with `tls`. */
  readonly ldapsUrl: string | undefined;
  readonly port: number;
  readonly suffix: string;
  readonly bindDn: string;
  readonly pid: number;
  /** Stops slapd by PID (SIGTERM, then SIGKILL after 5 s); resolves once it has exited. */
  stop(): Promise<void>;
  /** Starts it again on the same port and database (after `stop()`). */
  start(): Promise<void>;
  /** Applies LDIF change records as the rootdn (ldapmodify(1)); e.g. to lock or unlock an account. @throws when ldapmodify fails */
  modify(ldif: string): Promise<void>;
}

function ldif(o: SlapdOptions, suffix: string): string {
  const dc = /^dc=([^,]+)/.exec(suffix)?.[1] ?? "example";
  const parts = [
    `dn: ${suffix}\nobjectClass: dcObject\nobjectClass: organization\ndc: ${dc}\no: ${dc}\n`,
    `dn: ou=people,${suffix}\nobjectClass: organizationalUnit\nou: people\n`,
    `dn: ou=groups,${suffix}\nobjectClass: organizationalUnit\nou: groups\n`,
    `dn: ou=services,${suffix}\nobjectClass: organizationalUnit\nou: services\n`,
    `dn: cn=varco,ou=services,${suffix}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: varco\nuserPassword: ${o.servicePassword}\n`,
    ...(o.ppolicy
      ? [
          `dn: ou=policies,${suffix}\nobjectClass: organizationalUnit\nou: policies\n`,
          `dn: cn=default,ou=policies,${suffix}\nobjectClass: organizationalRole\nobjectClass: pwdPolicy\ncn: default\npwdAttribute: userPassword\npwdLockout: TRUE\npwdMaxFailure: ${o.ppolicy.maxFailure ?? 3}\npwdLockoutDuration: 0\n`,
        ]
      : []),
    ...o.users.map(
      (u) =>
        `dn: uid=${u.uid},ou=people,${suffix}\nobjectClass: inetOrgPerson\n${(u.objectClasses ?? []).map((c) => `objectClass: ${c}\n`).join("")}${
          u.attributes && "uid" in u.attributes ? "" : `uid: ${u.uid}\n`
        }cn: ${u.givenName} ${u.sn}\ngivenName: ${u.givenName}\nsn: ${u.sn}\nuserPassword: ${u.password}\n${Object.entries(
          u.attributes ?? {},
        )
          .flatMap(([k, v]) => (typeof v === "string" ? [v] : v).map((x) => `${k}: ${x}\n`))
          .join("")}`,
    ),
    ...(o.memberOf
      ? []
      : o.groups.map(
          (g) =>
            `dn: cn=${g.cn},ou=groups,${suffix}\nobjectClass: posixGroup\ncn: ${g.cn}\ngidNumber: ${g.gid}\n${g.members.map((m) => `memberUid: ${m}\n`).join("")}`,
        )),
  ];
  return parts.join("\n");
}

/** groupOfNames entries, added online so the memberof overlay maintains users' memberOf (slapadd bypasses overlays). */
function groupsOfNames(o: SlapdOptions, suffix: string): string {
  return o.groups
    .filter((g) => g.members.length > 0)
    .map(
      (g) =>
        `dn: cn=${g.cn},ou=groups,${suffix}\nobjectClass: groupOfNames\ncn: ${g.cn}\n${g.members.map((m) => `member: uid=${m},ou=people,${suffix}\n`).join("")}`,
    )
    .join("\n");
}

function config(dir: string, suffix: string, o: SlapdOptions, rootPassword: string): string {
  const tls = o.tls
    ? `TLSCACertificateFile ${o.tls.caFile}\nTLSCertificateFile ${o.tls.certFile}\nTLSCertificateKeyFile ${o.tls.keyFile}\n`
    : "";
  return `include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
${o.schema ? `include ${join(dir, "extra.schema")}\n` : ""}modulepath /usr/lib/ldap
moduleload back_mdb
${o.memberOf ? "moduleload memberof\n" : ""}${o.ppolicy ? "moduleload ppolicy\n" : ""}${tls}pidfile ${join(dir, "slapd.pid")}
argsfile ${join(dir, "slapd.args")}
database mdb
maxsize 16777216
suffix "${suffix}"
rootdn "cn=admin,${suffix}"
rootpw ${rootPassword}
directory ${join(dir, "data")}
access to attrs=userPassword by anonymous auth by self read by * none
access to * by users read by * none
${o.memberOf ? "overlay memberof\nmemberof-refint TRUE\n" : ""}${o.ppolicy ? `overlay ppolicy\nppolicy_default "cn=default,ou=policies,${suffix}"\n` : ""}`;
}

/** Writes the config and LDIF, runs slapadd, starts slapd and waits until it accepts connections. */
export async function startSlapd(o: SlapdOptions): Promise<Slapd> {
  const suffix = o.suffix ?? "dc=example,dc=org";
  mkdirSync(join(o.dir, "data"), { recursive: true, mode: 0o700 });
  const conf = join(o.dir, "slapd.conf");
  const rootPassword = randomBytes(12).toString("hex");
  writeFileSync(join(o.dir, "root.pw"), rootPassword, { mode: 0o600 });
  if (o.schema) writeFileSync(join(o.dir, "extra.schema"), o.schema, { mode: 0o600 });
  writeFileSync(conf, config(o.dir, suffix, o, rootPassword), { mode: 0o600 });
  writeFileSync(join(o.dir, "base.ldif"), ldif(o, suffix), { mode: 0o600 });
  await execa("slapadd", ["-f", conf, "-l", join(o.dir, "base.ldif")]);
  const port = o.port ?? (await freePort());
  const host = o.host ?? "127.0.0.1";
  const url = `ldap://${host}:${port}/`;
  const tlsPort = o.tls ? await freePort() : undefined;
  const urls = tlsPort ? `${url} ldaps://${host}:${tlsPort}/` : url;
  const wrap = (argv: string[]): [string, string[]] =>
    o.netns ? ["ip", ["netns", "exec", o.netns, ...argv]] : [argv[0] as string, argv.slice(1)];
  let child: ResultPromise | undefined;
  const launch = async () => {
    const [cmd, args] = wrap(["slapd", "-f", conf, "-h", urls, "-d", "0"]);
    const c: ResultPromise = execa(cmd, args, { reject: false, stdio: "ignore" });
    if (c.pid === undefined) throw new Error("slapd did not start (is the slapd package installed?)");
    child = c;
    try {
      await waitForPort(port, host, 10_000, o.netns);
      await new Promise((r) => setTimeout(r, 50));
      if (c.exitCode !== null) throw new Error(`slapd exited (${c.exitCode}); port ${port} was probably taken by another process`);
    } catch (err) {
      c.kill("SIGKILL");
      throw err;
    }
  };
  await launch();
  if (o.memberOf) {
    writeFileSync(join(o.dir, "groups.ldif"), groupsOfNames(o, suffix), { mode: 0o600 });
    await execa("ldapadd", ["-x", "-H", url, "-D", `cn=admin,${suffix}`, "-y", join(o.dir, "root.pw"), "-f", join(o.dir, "groups.ldif")]);
  }
  return {
    url: url.replace(/\/$/, ""),
    ldapsUrl: tlsPort ? `ldaps://${host}:${tlsPort}` : undefined,
    port,
    suffix,
    bindDn: `cn=varco,ou=services,${suffix}`,
    get pid() {
      return child?.pid ?? -1;
    },
    stop: async () => {
      if (child) await stopChild(child);
    },
    start: launch,
    modify: async (changes) => {
      await execa("ldapmodify", ["-x", "-H", url, "-D", `cn=admin,${suffix}`, "-y", join(o.dir, "root.pw")], { input: changes });
    },
  };
}

/** SIGTERM a child, SIGKILL it after `graceMs`; resolves when it has exited. */
export async function stopChild(child: ResultPromise, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null) return;
  const t = setTimeout(() => child.kill("SIGKILL"), graceMs);
  child.kill("SIGTERM");
  await child.catch(() => undefined);
  clearTimeout(t);
}
