/**
 * The demo environment: a throwaway slapd with demo users and groups, two loopback OpenSSH sshd
 * targets that trust the gateway's egress key, enrolled TOTP secrets, and a rendered policy.
 * Used by `varco demo` and by the integration tests (which start the gateway themselves).
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { newSecret, openTotpStore, type TotpSettings } from "../auth/index.ts";
import { loadOrCreateKey, publicKeyLine } from "../ssh/index.ts";
import { type DemoGroup, type DemoUser, type Slapd, type SlapdOptions, startSlapd } from "./slapd.ts";
import { type Sshd, startSshd } from "./sshd.ts";

export const DEMO_USERS: readonly DemoUser[] = [
  { uid: "mario.rossi", password: "mario-demo-pw", givenName: "Mario", sn: "Rossi" },
  { uid: "anna.bianchi", password: "anna-demo-pw", givenName: "Anna", sn: "Bianchi" },
];

/** The TOTP settings of the demo policy (policy defaults). */
export const DEMO_TOTP: TotpSettings = { issuer: "varco", digits: 6, periodMs: 30_000, window: 1 };

export const DEMO_GROUPS: readonly DemoGroup[] = [
  { cn: "astro", gid: 5001, members: ["mario.rossi", "anna.bianchi"] },
  { cn: "bio", gid: 5002, members: ["anna.bianchi"] },
];

/** Path of the policy template shipped in the repository. */
export const DEMO_TEMPLATE = join(dirname(fileURLToPath(import.meta.url)), "../../policies/demo.yaml");

export interface DemoEnvironmentOptions {
  readonly dir: string;
  readonly gatewayPort: number;
  /** Extra users (password `<uid>-pw`), all members of the group `testers`. */
  readonly extraUsers?: readonly string[];
  /** Policy template text; defaults to policies/demo.yaml. Placeholders: @NAME@. */
  readonly template?: string;
  /** TLS and memberOf options for the throwaway slapd. */
  readonly slapd?: Pick<SlapdOptions, "tls" | "memberOf">;
  /** Also store each user's TOTP secret in this directory attribute (auth.totp.secrets: ldap). */
  readonly totpAttribute?: string;
}

export interface DemoEnvironment {
  readonly dir: string;
  readonly policyFile: string;
  readonly slapd: Slapd;
  readonly targets: { readonly vm1: Sshd; readonly vm2: Sshd };
  readonly users: readonly DemoUser[];
  /** base32 TOTP secret per uid. */
  readonly secrets: ReadonlyMap<string, string>;
  /** Placeholder values used to render the policy (for tests that render their own). */
  readonly values: Readonly<Record<string, string>>;
  /** Renders a template with this environment's values and writes it to `file` (default: policyFile). */
  writePolicy(template: string, file?: string): string;
  /** Stops every daemon by PID and removes `dir`. */
  stop(): Promise<void>;
}

export function renderTemplate(template: string, values: Readonly<Record<string, string>>): string {
  return template.replace(/@([A-Z0-9_]+)@/g, (whole, name: string) => values[name] ?? whole);
}

/** Starts slapd and the two targets, enrols TOTP secrets, writes the policy. Stops what it started on failure. */
export async function startDemoEnvironment(o: DemoEnvironmentOptions): Promise<DemoEnvironment> {
  // A folder left by a killed run holds a stale LDAP database: start what this creates from scratch.
  for (const sub of ["slapd", "vm1", "vm2", "state", "keys"]) rmSync(join(o.dir, sub), { recursive: true, force: true });
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const extra: DemoUser[] = (o.extraUsers ?? []).map((uid) => ({ uid, password: `${uid}-pw`, givenName: uid, sn: "Test" }));
  const secrets = new Map<string, string>();
  const users = [...DEMO_USERS, ...extra].map((u) => {
    const secret = newSecret();
    secrets.set(u.uid, secret);
    return o.totpAttribute ? { ...u, attributes: { [o.totpAttribute]: secret } } : u;
  });
  const groups = [...DEMO_GROUPS, { cn: "testers", gid: 5003, members: extra.map((u) => u.uid) }];
  const servicePassword = `svc-${newSecret().slice(0, 12)}`;
  const stops: Array<() => Promise<void>> = [];
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    rmSync(o.dir, { recursive: true, force: true });
  };
  try {
    mkdirSync(join(o.dir, "secrets"), { recursive: true, mode: 0o700 });
    writeFileSync(join(o.dir, "secrets/ldap.pw"), `${servicePassword}\n`, { mode: 0o600 });
    const slapd = await startSlapd({ dir: join(o.dir, "slapd"), users, groups, servicePassword, ...o.slapd });
    stops.push(slapd.stop);
    const egress = loadOrCreateKey(join(o.dir, "keys/egress_ed25519"), "varco-egress");
    // The demo makes its own host key (a real gateway's come from `varco keys init`).
    loadOrCreateKey(join(o.dir, "keys/ssh_host_ed25519_key"), "varco-demo-host");
    const egressPub = publicKeyLine(egress, "varco-egress");
    const vm1 = await startSshd({ dir: join(o.dir, "vm1"), authorizedKeys: [egressPub] });
    stops.push(vm1.stop);
    const vm2 = await startSshd({ dir: join(o.dir, "vm2"), authorizedKeys: [egressPub] });
    stops.push(vm2.stop);

    const totp = openTotpStore(join(o.dir, "state"), DEMO_TOTP);
    if (!o.totpAttribute) for (const u of users) await totp.setSecret(u.uid, secrets.get(u.uid) ?? "");
    await totp.close();

    const values: Record<string, string> = {
      GATEWAY_PORT: String(o.gatewayPort),
      LDAP_URL: slapd.url,
      LDAPS_URL: slapd.ldapsUrl ?? "",
      VM1_PORT: String(vm1.port),
      VM2_PORT: String(vm2.port),
      VM1_HOST_KEY: vm1.hostKeyLine,
      VM2_HOST_KEY: vm2.hostKeyLine,
      TARGET_USER: vm1.user,
      DIR: o.dir,
    };
    const policyFile = join(o.dir, "gateway.yaml");
    const writePolicy = (template: string, file = policyFile) => {
      writeFileSync(file, renderTemplate(template, values), { mode: 0o600 });
      return file;
    };
    writePolicy(o.template ?? readFileSync(DEMO_TEMPLATE, "utf8"));
    return { dir: o.dir, policyFile, slapd, targets: { vm1, vm2 }, users, secrets, values, writePolicy, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
