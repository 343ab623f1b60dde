/** Terminal-safe text for audit output: every control and bidi character shown, never acted on. */
import { describe, expect, it } from "vitest";
import { printable, printableJson } from "../../src/obs/index.ts";

/** Whether `s` holds a code point a terminal acts on (C0 but \n, DEL, C1, bidi/invisible format). */
const hasControl = (s: string, allowNewline = false) =>
  [...s].some((c) => {
    const cp = c.codePointAt(0) as number;
    if (allowNewline && cp === 0x0a) return false;
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || /[\u061c\u200b-\u200f\u2028-\u202e\u2060\u2066-\u2069\ufeff]/u.test(c);
  });

describe("printable", () => {
  it("escapes C0, DEL and C1 controls visibly", () => {
    expect(printable("echo \x1b[2J\x1b]0;pwned\x07\rhidden\bX")).toBe("echo \\x1b[2J\\x1b]0;pwned\\x07\\rhidden\\bX");
    expect(printable("a\nb\tc\0d\x7fe\x9b31mf\x85g")).toBe("a\\nb\\tc\\x00d\\x7fe\\x9b31mf\\x85g");
    for (let cp = 0; cp <= 0x9f; cp++) {
      const out = printable(String.fromCodePoint(cp));
      if (cp < 0x20 || cp >= 0x7f) expect(hasControl(out), `U+${cp.toString(16)}`).toBe(false);
      else expect(out).toBe(String.fromCodePoint(cp));
    }
  });
  it("escapes bidi overrides, isolates, marks and invisible characters (Trojan Source)", () => {
    expect(printable("rm -rf /tmp/x\u202e/cod.sh")).toBe("rm -rf /tmp/x\\u202e/cod.sh");
    expect(printable("\u2066\u2067\u2068\u2069\u202a\u202b\u202c\u202d\u200e\u200f\u061c")).toBe(
      "\\u2066\\u2067\\u2068\\u2069\\u202a\\u202b\\u202c\\u202d\\u200e\\u200f\\u061c",
    );
    expect(printable("r\u200bm x\u2028y\ufeff")).toBe("r\\u200bm x\\u2028y\\ufeff");
    // Lone surrogates are shown, not replaced silently.
    expect(printable("a\ud800b")).toBe("a\\ud800b");
  });
  it("leaves ordinary text alone: UTF-8, emoji, backslashes, quotes", () => {
    for (const s of ["ls -la /home/mario", "perché ß € 日本語 😀", "grep 'a\\|b' f", 'echo "$HOME"', ""]) expect(printable(s)).toBe(s);
  });
  it("cuts at maxLength code points with an ellipsis, never inside an escape", () => {
    expect(printable("abcdef", 4)).toBe("abc…");
    expect(printable("abcd", 4)).toBe("abcd");
    expect(printable("😀😀😀😀😀", 3)).toBe("😀😀…");
    expect(printable("ab\x1bcd", 4)).toBe("ab…");
    expect(printable("ab\x1bcd", 6)).toBe("ab…");
    expect(printable("ab\x1bcd", 7)).toBe("ab\\x1b…");
    expect(printable("ab\x1bcde", 8)).toBe("ab\\x1bc…");
    expect(printable("ab\x1b", 6)).toBe("ab\\x1b");
    expect(printable("\x1b\x1b\x1b", 1)).toBe("…");
    for (let n = 1; n < 30; n++) {
      const out = printable("x\x1b[2J\u202ey\r\n", n);
      expect([...out].length).toBeLessThanOrEqual(n);
      expect(hasControl(out)).toBe(false);
      expect(out).not.toMatch(/\\(x[0-9a-f]?|u[0-9a-f]{0,3})?…$/);
    }
  });
});

describe("printableJson", () => {
  it("is the same JSON value with DEL, C1 and bidi characters escaped", () => {
    const v = { command: "a\x1b[2J\x9b1m\x7f\u202eb\u2028\\\x9b", n: 1, nested: ["\u2066"] };
    const out = printableJson(v);
    expect(hasControl(out)).toBe(false);
    expect(JSON.parse(out)).toEqual(v);
    expect(printableJson(undefined)).toBe("null");
  });
});
