/**
 * A minimal valid policy around a `network:` section, for the tests of the network renderers and
 * checks: `networkOf` parses it (through the real loader, defaults and checks included),
 * `networkIssues` returns the loader's `file:line:col: message` lines.
 */
import type { NetworkPolicy } from "../../src/policy/index.ts";
import { formatIssue, type PolicyError, parsePolicyText } from "../../src/policy/index.ts";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFm6vDyUu3Cq0cVl3kKq6a2lJjJx1m4Hq0rS2y3gk1Xz";

export interface NetworkPolicyOptions {
  /** The `gateway:` flow mapping (default: a metrics listener on loopback). */
  readonly gateway?: string;
  /** The YAML list of private_networks (default `[10.10.0.0/16]`). */
  readonly privateNetworks?: string;
}

/** The policy text: `network` is the YAML of the keys after public_interface/public_ip/private_networks, indented by two. */
export function networkPolicyText(network: string, o: NetworkPolicyOptions = {}): string {
  return `version: 1
gateway: ${o.gateway ?? '{ metrics_listen: "127.0.0.1:9108" }'}
directory: { ldap: { url: "ldap://x", bind_dn: cn=a, bind_password_file: p, user_base: ou=p } }
targets: { t: { host: 10.0.0.1, host_key: "${KEY}" } }
routes: [ { users: [u], alias: t, target: t } ]
network:
  public_interface: eth0
  public_ip: 203.0.113.10
  private_networks: ${o.privateNetworks ?? "[10.10.0.0/16]"}
${network}`;
}

/** The parsed network section. @throws PolicyError when the policy is refused. */
export function networkOf(network: string, o: NetworkPolicyOptions = {}): NetworkPolicy {
  const n = parsePolicyText(networkPolicyText(network, o), "/p.yaml").policy.network;
  if (!n) throw new Error("no network");
  return n;
}

/** The loader's findings as `file:line:col: message` lines (empty when the policy is accepted). */
export function networkIssues(network: string, o: NetworkPolicyOptions = {}): string[] {
  try {
    parsePolicyText(networkPolicyText(network, o), "/p.yaml");
    return [];
  } catch (err) {
    return (err as PolicyError).issues.map(formatIssue);
  }
}
