/**
 * Loading the policy: YAML with source positions → zod validation → cross-reference checks.
 * Every error carries `file:line:col` (1-based), so editors and CI can jump to it.
 */
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { isMap, isScalar, isSeq, LineCounter, type Node, parseDocument } from "yaml";
import type { z } from "zod";
import { checkNetwork } from "./network.ts";
import { type Policy, policySchema } from "./schema.ts";
import { parseHostPort } from "./units.ts";

/** One problem in a policy file; `line` and `col` are 1-based. */
export interface PolicyIssue {
  readonly file: string;
  readonly line: number;
  readonly col: number;
  readonly message: string;
}

/** Thrown when a policy file cannot be read or is invalid. `issues` holds every problem found. */
export class PolicyError extends Error {
  readonly issues: readonly PolicyIssue[];
  constructor(issues: readonly PolicyIssue[]) {
    super(issues.map(formatIssue).join("\n"));
    this.name = "PolicyError";
    this.issues = issues;
  }
}

/** `file:line:col: message`, the format of every policy error. */
export function formatIssue(i: PolicyIssue): string {
  return `${i.file}:${i.line}:${i.col}: ${i.message}`;
}

/** A validated policy plus where it came from. */
export interface LoadedPolicy {
  readonly policy: Policy;
  /** Absolute path of the policy file. */
  readonly file: string;
  /** Resolves a path written in the policy against the policy file's folder. */
  readonly resolvePath: (p: string) => string;
  /** SHA-256 (hex) of the text that was read (loadPolicyFile only): which version of the file this is. */
  readonly sha256?: string | undefined;
  /** Valid settings that probably do not mean what they say ({@link policyNotes}), each with its position. */
  readonly notes: readonly PolicyIssue[];
}

type Path = readonly PropertyKey[];

/**
 * Reads and validates a policy file.
 * @throws PolicyError with every issue (YAML syntax, schema, cross-references), each as file:line:col.
 */
/** Policy files above this size are refused unread (a policy is a few KiB; 10 000 forwards ≈ 2 MiB). */
export const MAX_POLICY_BYTES = 16 * 1024 * 1024;

export function loadPolicyFile(file: string): LoadedPolicy {
  const abs = resolve(file);
  let text: string;
  try {
    const size = statSync(abs).size;
    if (size > MAX_POLICY_BYTES) {
      throw new PolicyError([
        {
          file: abs,
          line: 1,
          col: 1,
          message: `the policy file is ${size} bytes; the limit is ${MAX_POLICY_BYTES} (is this the right file?)`,
        },
      ]);
    }
    text = readFileSync(abs, "utf8");
  } catch (err) {
    if (err instanceof PolicyError) throw err;
    const reason = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new PolicyError([{ file: abs, line: 1, col: 1, message: `cannot read the policy file (${reason})` }]);
  }
  return { ...parsePolicyText(text, abs), sha256: createHash("sha256").update(text, "utf8").digest("hex") };
}

/**
 * Validates policy text; `file` is used in messages and to resolve relative paths.
 * @throws PolicyError
 */
export function parsePolicyText(text: string, file: string): LoadedPolicy {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number, message: string): PolicyIssue => {
    const pos = lineCounter.linePos(offset);
    return { file, line: pos.line, col: pos.col, message };
  };
  // Warnings (an unknown %YAML version, unknown tags) are errors too: a security policy must mean one thing.
  const problems = [...doc.errors, ...doc.warnings];
  if (problems.length > 0) {
    throw new PolicyError(problems.map((e) => at(e.pos[0], `YAML: ${e.message.split("\n")[0]}`)));
  }
  let raw: unknown;
  try {
    // maxAliasCount bounds alias expansion ("billion laughs"): yaml throws past it.
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new PolicyError([at(0, `YAML: ${(err as Error).message.split("\n")[0]}`)]);
  }
  const result = policySchema.safeParse(raw ?? {});
  const issues: PolicyIssue[] = [];
  if (!result.success) {
    for (const issue of result.error.issues) {
      issues.push(...zodIssueToPolicyIssues(issue, doc.contents, at));
    }
    throw new PolicyError(sortIssues(issues));
  }
  const policy = result.data;
  for (const [path, message] of crossCheck(policy)) {
    issues.push(at(offsetOf(doc.contents, path), message));
  }
  if (issues.length > 0) throw new PolicyError(sortIssues(issues));
  const base = dirname(file);
  return {
    policy,
    file,
    resolvePath: (p: string) => (isAbsolute(p) ? p : resolve(base, p)),
    notes: policyNotes(policy).map(([path, message]) => at(offsetOf(doc.contents, path), message)),
  };
}

/**
 * Valid settings that probably do not do what their author meant; `varco policy check` prints them
 * and still exits 0. Pure.
 * @returns (path, message) pairs
 */
export function policyNotes(policy: Policy): Array<[Path, string]> {
  const notes: Array<[Path, string]> = [];
  policy.routes.forEach((route, i) => {
    const narrowed = (["scp", "sftp", "shell"] as const).filter((k) => !route.allow[k]);
    if (route.allow.exec && narrowed.length > 0) {
      notes.push([
        ["routes", i, "allow"],
        `allow.exec is true, so ${narrowed.map((k) => `allow.${k}: false`).join(", ")} does not keep those programs out: ` +
          "`/usr/bin/scp -t x`, `/usr/lib/openssh/sftp-server` or `bash -il` still run as recorded commands; set exec: false for a file-transfer-only route",
      ]);
    }
  });
  return notes;
}

function sortIssues(issues: PolicyIssue[]): PolicyIssue[] {
  return issues.sort((a, b) => a.line - b.line || a.col - b.col);
}

function zodIssueToPolicyIssues(
  issue: z.core.$ZodIssue,
  root: Node | null,
  at: (offset: number, message: string) => PolicyIssue,
): PolicyIssue[] {
  const path = issue.path;
  const where = path.length > 0 ? `${path.join(".")}: ` : "";
  if (issue.code === "unrecognized_keys") {
    return issue.keys.map((key) =>
      at(offsetOfKey(root, path, key), `${where}unknown key "${key}" (check the spelling; see \`varco policy schema\`)`),
    );
  }
  if (issue.code === "invalid_type" && issue.input === undefined) {
    const key = String(path[path.length - 1]);
    return [at(offsetOf(root, path.slice(0, -1)), `missing required key "${key}" in ${path.slice(0, -1).join(".") || "the top level"}`)];
  }
  return [at(offsetOf(root, path), `${where}${issue.message}`)];
}

/** Offset of the node at `path`, or of its nearest existing ancestor. */
function offsetOf(root: Node | null, path: Path): number {
  let node: unknown = root;
  let best = root?.range?.[0] ?? 0;
  for (const key of path) {
    const next = childOf(node, key);
    if (next === undefined) break;
    node = next.value ?? next.key;
    const range = (next.value as Node | null)?.range ?? (next.key as Node | null)?.range;
    if (range) best = range[0];
  }
  return best;
}

function offsetOfKey(root: Node | null, path: Path, key: string): number {
  let node: unknown = root;
  for (const k of path) {
    const next = childOf(node, k);
    if (next === undefined) return offsetOf(root, path);
    node = next.value;
  }
  const pair = childOf(node, key);
  const range = (pair?.key as Node | null)?.range;
  return range ? range[0] : offsetOf(root, path);
}

function childOf(node: unknown, key: PropertyKey): { key: unknown; value: unknown } | undefined {
  if (isMap(node)) {
    for (const item of node.items) {
      const k = isScalar(item.key) ? item.key.value : item.key;
      if (String(k) === String(key)) return { key: item.key, value: item.value };
    }
    return undefined;
  }
  if (isSeq(node) && typeof key === "number") {
    const item = node.items[key];
    return item === undefined ? undefined : { key: item, value: item };
  }
  return undefined;
}

/** Checks that span several keys: route → target references, alias clashes. Returns (path, message) pairs. */
function crossCheck(policy: Policy): Array<[Path, string]> {
  const out: Array<[Path, string]> = [];
  policy.routes.forEach((route, i) => {
    if (!(route.target in policy.targets)) {
      const known = Object.keys(policy.targets).join(", ") || "none";
      out.push([["routes", i, "target"], `route "${route.alias}" names unknown target "${route.target}" (targets: ${known})`]);
    }
  });
  const seen = new Map<string, number>();
  policy.routes.forEach((route, i) => {
    for (const who of [...route.users.map((u) => `user:${u}`), ...route.groups.map((g) => `group:${g}`)]) {
      const key = `${who}/${route.alias}`;
      const first = seen.get(key);
      if (first !== undefined) {
        out.push([["routes", i, "alias"], `alias "${route.alias}" is given to ${who} twice (also routes[${first}])`]);
      } else {
        seen.set(key, i);
      }
    }
  });
  if (!policy.directory.ldap && policy.directory.local_users.length === 0) {
    out.push([["directory"], "directory needs ldap or local_users"]);
  }
  if (policy.network) out.push(...checkNetwork(policy));
  out.push(...webListenClash(policy));
  if (policy.auth.totp.secrets === "ldap" && !policy.auth.totp.ldap_attribute) {
    out.push([["auth", "totp", "secrets"], "secrets: ldap needs auth.totp.ldap_attribute"]);
  }
  if (policy.auth.totp.secrets === "ldap" && !policy.directory.ldap) {
    out.push([["auth", "totp", "secrets"], "secrets: ldap needs directory.ldap (the secrets are read from the directory)"]);
  }
  return out;
}

/**
 * The web console's listener must be its own: a `web.listen` on the port of a `gateway.listen` or
 * `gateway.metrics_listen` (same address, or either side a wildcard) is refused. Port 0 (any free
 * port) never clashes.
 */
function webListenClash(policy: Policy): Array<[Path, string]> {
  const web = policy.web ? parseHostPort(policy.web.listen) : undefined;
  if (!web || web.port === 0) return [];
  const wildcard = (h: string) => h === "0.0.0.0" || h === "::";
  const others = [
    ...policy.gateway.listen.map((l) => ["gateway.listen", l] as const),
    ...(policy.gateway.metrics_listen ? [["gateway.metrics_listen", policy.gateway.metrics_listen] as const] : []),
  ];
  const out: Array<[Path, string]> = [];
  for (const [key, text] of others) {
    const hp = parseHostPort(text);
    if (!hp || hp.port !== web.port) continue;
    if (hp.host === web.host || wildcard(hp.host) || wildcard(web.host))
      out.push([["web", "listen"], `${policy.web?.listen} is also ${key} (${text}): the web console needs a listener of its own`]);
  }
  return out;
}
