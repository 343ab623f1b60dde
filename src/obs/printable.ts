/**
 * Text that is safe to show on a terminal. Audit rows hold attacker-controlled strings (typed
 * commands, file paths, user names); written raw, ESC/CSI/OSC sequences (ECMA-48 §5), CR and BS
 * would repaint, retitle or hide lines on the auditor's terminal, and Unicode bidi controls
 * (UAX #9 §2, "Trojan Source", CVE-2021-42574) would reorder what is shown.
 */

/** Code points escaped besides C0, DEL and C1: bidi marks/embeddings/overrides/isolates, line/paragraph separators, invisible format characters. */
const INVISIBLE = new Set([
  0x061c, // ARABIC LETTER MARK
  0x200b, // ZERO WIDTH SPACE
  0x200c, // ZERO WIDTH NON-JOINER
  0x200d, // ZERO WIDTH JOINER
  0x200e, // LEFT-TO-RIGHT MARK
  0x200f, // RIGHT-TO-LEFT MARK
  0x2028, // LINE SEPARATOR
  0x2029, // PARAGRAPH SEPARATOR
  0x202a, // LRE
  0x202b, // RLE
  0x202c, // PDF
  0x202d, // LRO
  0x202e, // RLO
  0x2060, // WORD JOINER
  0x2066, // LRI
  0x2067, // RLI
  0x2068, // FSI
  0x2069, // PDI
  0xfeff, // ZERO WIDTH NO-BREAK SPACE (BOM)
]);

const SHORT: Record<number, string> = { 8: "\\b", 9: "\\t", 10: "\\n", 13: "\\r" };

/** Whether code point `cp` must be escaped: C0, DEL, C1, a lone surrogate, or one of {@link INVISIBLE}. */
function unsafe(cp: number): boolean {
  return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || (cp >= 0xd800 && cp <= 0xdfff) || INVISIBLE.has(cp);
}

/** The visible escape of one code point: `\n`, `\x1b`, `\u202e`. */
function escapeCodePoint(cp: number): string {
  const short = SHORT[cp];
  if (short) return short;
  return cp <= 0xff ? `\\x${cp.toString(16).padStart(2, "0")}` : `\\u${cp.toString(16).padStart(4, "0")}`;
}

/**
 * `text` with every C0 control (U+0000–U+001F, newline and tab included), DEL, C1 control
 * (U+0080–U+009F, e.g. the 8-bit CSI U+009B that xterm honours in UTF-8 mode), lone surrogate
 * and bidi/invisible format character replaced by a visible escape: `\x1b`, `\r`, `\b`, `\n`,
 * `\t`, `\x9b`, `\u202e`. Everything else, backslashes included, is left as is, so ordinary
 * commands read as typed (the `--json` output is the exact form).
 *
 * @param maxLength if given (≥ 1), the result is cut to at most this many code points, ending
 *   with `…` when cut; an escape is never cut in half.
 */
export function printable(text: string, maxLength?: number): string {
  const limit = maxLength === undefined ? Number.POSITIVE_INFINITY : Math.max(1, Math.floor(maxLength));
  const pieces: string[] = [];
  let length = 0;
  for (const ch of text) {
    const cp = ch.codePointAt(0) as number;
    // An escape is ASCII (its length counts its code points); any other piece is one code point.
    const piece = unsafe(cp) ? escapeCodePoint(cp) : ch;
    const n = unsafe(cp) ? piece.length : 1;
    if (length + n > limit) {
      // Cut whole pieces until the ellipsis fits.
      while (pieces.length > 0 && length + 1 > limit) {
        const last = pieces.pop() as string;
        length -= last.length > 1 && last.startsWith("\\") ? last.length : 1;
      }
      return `${pieces.join("")}…`;
    }
    pieces.push(piece);
    length += n;
  }
  return pieces.join("");
}

/** Code points that JSON.stringify leaves raw but a terminal would act on (DEL, C1, bidi, separators). */
const JSON_UNSAFE = /[\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060\u2066-\u2069\ufeff]/g;

/**
 * `JSON.stringify(value)` (one line) with the characters it leaves raw but a terminal acts on
 * (DEL, C1 controls, bidi and invisible format characters) written as `\uXXXX` escapes: the same
 * JSON value (RFC 8259 §7), safe to print. C0 controls are already escaped by JSON.stringify.
 */
export function printableJson(value: unknown): string {
  return (JSON.stringify(value) ?? "null").replace(JSON_UNSAFE, (c) => `\\u${(c.codePointAt(0) as number).toString(16).padStart(4, "0")}`);
}
