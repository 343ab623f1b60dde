/**
 * The policy reference (docs/policy.md), generated from the policy's JSON Schema so that it cannot
 * drift from what `varco policy check` accepts: every key's meaning is its `.describe()` text in
 * src/policy/schema.ts. Pure: no I/O, no clock, no locale.
 */
import { policyJsonSchema } from "./schema.ts";

/** The subset of JSON Schema (draft 2020-12) that zod's `toJSONSchema` emits for the policy. */
export interface JsonSchemaNode {
  readonly type?: string | readonly string[];
  readonly title?: string;
  readonly description?: string;
  readonly default?: unknown;
  /** A default zod cannot put in `default` (of a transforming schema): see `record` in schema.ts. */
  readonly "x-default"?: unknown;
  readonly const?: unknown;
  readonly enum?: readonly unknown[];
  readonly anyOf?: readonly JsonSchemaNode[];
  readonly oneOf?: readonly JsonSchemaNode[];
  readonly properties?: Readonly<Record<string, JsonSchemaNode>>;
  readonly required?: readonly string[];
  readonly items?: JsonSchemaNode;
  readonly additionalProperties?: boolean | JsonSchemaNode;
  readonly propertyNames?: JsonSchemaNode;
  readonly minimum?: number;
  readonly maximum?: number;
  readonly exclusiveMinimum?: number;
  readonly exclusiveMaximum?: number;
  readonly minLength?: number;
  readonly maxLength?: number;
  readonly minItems?: number;
  readonly maxItems?: number;
  readonly pattern?: string;
}

/** One key of the policy, as a row of the reference. */
export interface PolicyKeyRow {
  /** Dotted path: `gateway.audit_syslog.url`, `routes[].allow.exec`, `targets.<name>.host`. */
  readonly path: string;
  /** The top-level key the row belongs to (`gateway`, `routes`, …). */
  readonly section: string;
  /** Readable type: `duration`, `non-empty list of string`, `` `keep` | `terminate` ``, `true | false | object`. */
  readonly type: string;
  /** The default as a YAML literal, `required`, or `—` (absent unless written). */
  readonly default: string;
  /** The key's description ("" when the schema has none). */
  readonly description: string;
}

/** Patterns longer than this are left out of the type column (they read worse than the description). */
const MAX_PATTERN_SHOWN = 40;

/** Integer bounds zod writes for "no bound" (`Number.MAX_SAFE_INTEGER` and its negation). */
const UNBOUNDED = Number.MAX_SAFE_INTEGER;

/** Plain YAML scalars that need no quotes (and that YAML would not read as another type). */
const PLAIN_STRING = /^[A-Za-z0-9_./][A-Za-z0-9_./-]*$/;
const YAML_SPECIAL = /^(?:true|false|yes|no|on|off|null|~|y|n)$/i;

/**
 * A value as it would be written in the policy (YAML flow style): `30s`, `"0.0.0.0:22"`,
 * `[LANG, "LC_*"]`, `{}`. Strings are quoted (JSON-style double quotes, valid YAML) unless plain.
 */
export function yamlLiteral(value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (typeof value === "string") {
    const plain = PLAIN_STRING.test(value) && !YAML_SPECIAL.test(value) && Number.isNaN(Number(value));
    return plain ? value : JSON.stringify(value);
  }
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (Array.isArray(value)) return `[${value.map(yamlLiteral).join(", ")}]`;
  if (typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>);
    return entries.length === 0 ? "{}" : `{ ${entries.map(([k, v]) => `${k}: ${yamlLiteral(v)}`).join(", ")} }`;
  }
  return String(value);
}

function code(text: string): string {
  return `\`${text}\``;
}

function isObjectNode(s: JsonSchemaNode): boolean {
  return s.type === "object" || s.properties !== undefined;
}

/** `1–65535`, `> 0`, `≤ 10000`: the numeric bounds that matter (zod's safe-integer limits are left out). */
function numberBounds(s: JsonSchemaNode): string {
  const parts: string[] = [];
  const max = s.maximum !== undefined && Math.abs(s.maximum) < UNBOUNDED ? s.maximum : undefined;
  if (s.minimum !== undefined && Math.abs(s.minimum) < UNBOUNDED && max !== undefined) return `${s.minimum}–${max}`;
  if (s.minimum !== undefined && Math.abs(s.minimum) < UNBOUNDED) parts.push(`≥ ${s.minimum}`);
  if (s.exclusiveMinimum !== undefined) parts.push(`> ${s.exclusiveMinimum}`);
  if (max !== undefined) parts.push(`≤ ${max}`);
  if (s.exclusiveMaximum !== undefined) parts.push(`< ${s.exclusiveMaximum}`);
  return parts.join(", ");
}

/** The readable type of a schema node, with the constraints that matter. */
export function typeText(s: JsonSchemaNode): string {
  if (s.const !== undefined) return code(yamlLiteral(s.const));
  if (s.enum !== undefined) return s.enum.map((v) => code(yamlLiteral(v))).join(" | ");
  const branches = s.anyOf ?? s.oneOf;
  if (branches !== undefined) {
    const texts = branches.map((b) => (b.type === "boolean" && b.const === undefined ? "true | false" : typeText(b)));
    return [...new Set(texts)].join(" | ");
  }
  const type = Array.isArray(s.type) ? s.type.join(" | ") : (s.type as string | undefined);
  switch (type) {
    case "array": {
      const item = s.items === undefined ? "anything" : typeText(s.items);
      const union = s.items !== undefined && (s.items.enum ?? s.items.anyOf ?? s.items.oneOf) !== undefined;
      const items = union && item.includes(" | ") ? `(${item})` : item;
      const size =
        s.minItems !== undefined && s.maxItems !== undefined
          ? `${s.minItems}–${s.maxItems} `
          : s.minItems === 1
            ? "non-empty "
            : s.minItems !== undefined && s.minItems > 1
              ? `${s.minItems}+ `
              : "";
      return `${size}list of ${items}`;
    }
    case "object": {
      const value = s.additionalProperties;
      if (s.properties === undefined && typeof value === "object") {
        const key = s.propertyNames?.pattern;
        const keyText = key !== undefined && key.length <= MAX_PATTERN_SHOWN ? ` (name matching ${code(key)})` : "";
        return `map of name → ${typeText(value)}${keyText}`;
      }
      return "object";
    }
    case "integer":
    case "number": {
      const bounds = numberBounds(s);
      return bounds === "" ? type : `${type} ${bounds}`;
    }
    case "string": {
      const kind = s.title ?? "string";
      const prefix = s.minLength === 1 && s.maxLength === undefined ? "non-empty " : "";
      const length =
        s.minLength !== undefined && s.maxLength !== undefined
          ? ` of ${s.minLength}–${s.maxLength} characters`
          : s.maxLength !== undefined
            ? ` of at most ${s.maxLength} characters`
            : s.minLength !== undefined && s.minLength > 1
              ? ` of at least ${s.minLength} characters`
              : "";
      const pattern = s.pattern !== undefined && s.pattern.length <= MAX_PATTERN_SHOWN ? ` matching ${code(s.pattern)}` : "";
      return `${prefix}${kind}${length}${pattern}`;
    }
    case undefined:
      return "anything";
    default:
      return type;
  }
}

function defaultText(s: JsonSchemaNode, required: boolean): string {
  if (s.default !== undefined) return code(yamlLiteral(s.default));
  if (s["x-default"] !== undefined) return code(yamlLiteral(s["x-default"]));
  return required ? "required" : "—";
}

/**
 * Every key below the JSON Schema node `s` (found under `path`): the rows of its object
 * properties, then of its list items (`path[]`), map values (`path.<name>`) and union branches.
 */
function childRows(s: JsonSchemaNode, path: string, section: string, out: PolicyKeyRow[]): void {
  if (s.properties !== undefined) {
    const required = new Set(s.required ?? []);
    for (const [key, child] of Object.entries(s.properties)) keyRows(child, `${path}.${key}`, section, required.has(key), out);
  }
  if (s.items !== undefined) childRows(s.items, `${path}[]`, section, out);
  if (typeof s.additionalProperties === "object" && isObjectNode(s.additionalProperties)) {
    childRows(s.additionalProperties, `${path}.<name>`, section, out);
  }
  for (const branch of s.anyOf ?? s.oneOf ?? []) childRows(branch, path, section, out);
}

function keyRows(s: JsonSchemaNode, path: string, section: string, required: boolean, out: PolicyKeyRow[]): void {
  out.push({ path, section, type: typeText(s), default: defaultText(s, required), description: s.description ?? "" });
  childRows(s, path, section, out);
}

/**
 * Every key of the policy, in schema order, as reference rows (one per key; list items and map
 * values appear through their keys: `routes[].alias`, `targets.<name>.host`).
 * @param schema the policy's JSON Schema; default {@link policyJsonSchema}().
 */
export function policyKeyRows(schema: JsonSchemaNode = policyJsonSchema() as JsonSchemaNode): PolicyKeyRow[] {
  const out: PolicyKeyRow[] = [];
  const required = new Set(schema.required ?? []);
  for (const [key, child] of Object.entries(schema.properties ?? {})) keyRows(child, key, key, required.has(key), out);
  return out;
}

/** Text safe inside one Markdown table cell (GFM): pipes escaped, line breaks flattened. */
function cell(text: string): string {
  return text
    .replace(/\\/g, "\\\\")
    .replace(/\|/g, "\\|")
    .replace(/\s*\n\s*/g, " ");
}

/**
 * {@link cell} for text with code spans: backslashes are literal inside a code span, so there only
 * pipes are escaped (GFM unescapes `\|` in a table cell before it parses the code span).
 */
function cellWithCode(text: string): string {
  return text
    .split(/(`[^`]*`)/)
    .map((part, i) => (i % 2 === 1 ? part.replace(/\|/g, "\\|") : cell(part)))
    .join("");
}

/**
 * The policy reference in Markdown: a short header (generated, do not edit), then one section per
 * top-level key (version, gateway, directory, auth, targets, routes, network) with a table
 * `| key | type | default | description |`. Deterministic: the same schema gives the same bytes.
 * `varco policy reference` prints it; docs/policy.md is a copy that a unit test keeps in sync.
 * @param schema the policy's JSON Schema; default {@link policyJsonSchema}().
 */
export function renderPolicyReference(schema: JsonSchemaNode = policyJsonSchema() as JsonSchemaNode): string {
  const rows = policyKeyRows(schema);
  const sections = Object.keys(schema.properties ?? {});
  const lines: string[] = [
    "# Policy reference",
    "",
    "<!-- Generated by `varco policy reference` from src/policy/schema.ts. Do not edit by hand: change the",
    "     schema's descriptions, then run `UPDATE_REFERENCE=1 npx vitest run test/unit/policy-reference.test.ts`. -->",
    "",
    "Every key of the policy file (`--policy F`, else `VARCO_POLICY`, else `/etc/varco/gateway.yaml`);",
    "`varco policy check` validates a file against it and `varco policy schema` prints it as JSON Schema.",
    "Unknown keys are errors. Relative paths are relative to the policy file; secrets are never inline",
    "(a file, or `env:VAR`). A *duration* is written `500ms`, `30s`, `15m`, `12h` or `7d`; a *size*",
    "`100B`, `512KiB`, `64MiB`, `1GiB` (or `KB`, `MB`, `GB`, powers of 1000).",
    "",
    "`a[].b` is key `b` of every item of list `a`; `a.<name>.b` is key `b` of every entry of map `a`.",
    "Default `required`: the key must be written whenever its parent is; `—`: absent unless written.",
    "",
    sections.map((s) => `[${s}](#${s})`).join(" · "),
  ];
  for (const section of sections) {
    lines.push("", `## ${section}`, "", "| key | type | default | description |", "|---|---|---|---|");
    for (const r of rows.filter((row) => row.section === section)) {
      lines.push(`| ${code(r.path)} | ${cellWithCode(r.type)} | ${cellWithCode(r.default)} | ${cellWithCode(r.description)} |`);
    }
  }
  return `${lines.join("\n")}\n`;
}
