/**
 * The one escaping function of the web console. Everything the audit holds is hostile input
 * (typed commands, file paths, account names, terminal output): it is shown through
 * {@link text}, which makes control characters visible (src/obs/printable.ts: ESC, CR, bidi
 * overrides…) and then HTML-escapes `& < > " '` (so it is inert in element content and in
 * double- or single-quoted attribute values). Pages are built with the {@link html} tag, which
 * passes every interpolated value through {@link text} unless it is already {@link Html}.
 */
import { printable } from "../obs/printable.ts";

const ENTITIES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Markup that is already safe (built by {@link html}); never construct one from audit data. */
export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

/**
 * `value` as safe HTML text: control and invisible characters as visible escapes (`\x1b`, `\u202e`),
 * then `& < > " '` as entities. `null`/`undefined` are the empty string.
 * @param maxLength cut to at most this many code points (before HTML escaping), ending with `…`.
 */
export function text(value: unknown, maxLength?: number): string {
  if (value === null || value === undefined) return "";
  return printable(String(value), maxLength).replace(/[&<>"']/g, (c) => ENTITIES[c] as string);
}

/** A template literal whose interpolations are escaped with {@link text}; arrays are joined; {@link Html} passes as is. */
export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0] ?? "";
  values.forEach((v, i) => {
    out += piece(v) + (strings[i + 1] ?? "");
  });
  return new Html(out);
}

function piece(v: unknown): string {
  if (v instanceof Html) return v.value;
  if (Array.isArray(v)) return v.map(piece).join("");
  if (v === false) return "";
  return text(v);
}
