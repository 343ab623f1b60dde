/**
 * The target menu's state machine (src/ssh/menu.ts) and the parsing of `ssh uid@gateway ssh-config`
 * (src/routing/ssh-config.ts): keys split across chunks, numbers in and out of range, hostile
 * descriptions rendered inert, floods bounded, and command lines that try to smuggle more in.
 */
import { describe, expect, it } from "vitest";
import { parseGatewayAddress, parseSshConfigCommand, renderSshConfig } from "../../src/routing/index.ts";
import { endMenu, feedMenu, MAX_MENU_INPUT, type MenuEntry, type MenuStep, resizeMenu, startMenu } from "../../src/ssh/menu.ts";

const ENTRIES: readonly MenuEntry[] = [
  { alias: "alpha", description: "first box" },
  { alias: "beta", description: "second box" },
  { alias: "gamma", description: undefined },
];

const start = (entries: readonly MenuEntry[] = ENTRIES, size: { cols?: number; rows?: number } = {}) =>
  startMenu({ uid: "mario.rossi", entries, ...size });

/** Feeds each chunk in turn; returns the last step and everything written. */
function feed(first: MenuStep, ...chunks: Array<string | Buffer>): { step: MenuStep; output: string } {
  let step = first;
  let output = first.output;
  for (const c of chunks) {
    step = feedMenu(step.state, typeof c === "string" ? Buffer.from(c, "latin1") : c);
    output += step.output;
  }
  return { step, output };
}

/** Bytes that would make a terminal act: ESC, BEL, CSI (8-bit), and any other C0 but CR/LF. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: looking for control characters is the point
const ACTIVE = /[\u0000-\u0009\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e]/;
/** The menu's own escapes (cursor up, erase below, reverse video, reset) removed. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: removing the menu's own escape sequences is the point
const withoutOwnEscapes = (s: string) => s.replace(/\x1b\[(\d+A|J|7m|0m)/g, "");

describe("target menu: keys", () => {
  it("starts on the first entry and chooses it with Enter", () => {
    const { step } = feed(start(), "\r");
    expect(step.outcome).toMatchObject({ kind: "chosen", alias: "alpha", number: 1 });
  });

  it("moves with CSI and SS3 arrows, and k/j, clamped at both ends", () => {
    expect(feed(start(), "\x1b[B\r").step.outcome).toMatchObject({ alias: "beta" });
    expect(feed(start(), "\x1bOB\x1bOB\r").step.outcome).toMatchObject({ alias: "gamma" });
    expect(feed(start(), "\x1b[B\x1b[B\x1b[B\x1b[B\r").step.outcome).toMatchObject({ alias: "gamma" });
    expect(feed(start(), "\x1b[A\x1b[A\r").step.outcome).toMatchObject({ alias: "alpha" });
    expect(feed(start(), "jjk\r").step.outcome).toMatchObject({ alias: "beta" });
    // CSI with parameters (Ctrl+Down in xterm) is still down.
    expect(feed(start(), "\x1b[1;5B\r").step.outcome).toMatchObject({ alias: "beta" });
  });

  it("completes an arrow key split across chunks at every byte", () => {
    for (const seq of ["\x1b[B", "\x1bOB", "\x1b[1;5B"]) {
      for (let cut = 1; cut < seq.length; cut++) {
        const { step } = feed(start(), seq.slice(0, cut), seq.slice(cut), "\r");
        expect(step.outcome, JSON.stringify({ seq, cut })).toMatchObject({ alias: "beta" });
      }
      // One byte per chunk.
      const { step } = feed(start(), ...[...seq, "\r"]);
      expect(step.outcome).toMatchObject({ alias: "beta" });
    }
  });

  it("ignores other escape sequences, a lone ESC and unknown keys", () => {
    const { step } = feed(start(), "\x1b[C\x1b[2~\x1b[5n\x1bx\x1b[D zZ!\x1b[B\r");
    expect(step.outcome).toMatchObject({ alias: "beta" });
  });

  it("chooses by number, with Enter", () => {
    expect(feed(start(), "2").step.outcome).toBeUndefined();
    expect(feed(start(), "2\r").step.outcome).toMatchObject({ alias: "beta", number: 2 });
    expect(feed(start(), "3\n").step.outcome).toMatchObject({ alias: "gamma" });
    // Backspace takes a digit back.
    expect(feed(start(), "3\x7f1\r").step.outcome).toMatchObject({ alias: "alpha" });
  });

  it("never chooses an out-of-range number: says so, and waits", () => {
    for (const typed of ["0", "4", "9", "99999999999"]) {
      const { step, output } = feed(start(), `${typed}\r`);
      expect(step.outcome, typed).toBeUndefined();
      expect(output).toMatch(/no entry \d/);
      // The next Enter chooses the highlighted entry (still the first).
      expect(feedMenu(step.state, Buffer.from("\r")).outcome).toMatchObject({ alias: "alpha" });
    }
    // Two-digit numbers work where there are that many entries.
    const many = Array.from({ length: 12 }, (_, i) => ({ alias: `h${i + 1}` }));
    expect(feed(start(many, { rows: 40 }), "12\r").step.outcome).toMatchObject({ alias: "h12", number: 12 });
    expect(feed(start(many, { rows: 40 }), "13\r").step.outcome).toBeUndefined();
  });

  it("leaves with q, Ctrl-C, Ctrl-D and at the end of input", () => {
    expect(feed(start(), "\x1b[Bq").step.outcome).toEqual({ kind: "quit", reason: "q" });
    expect(feed(start(), "Q").step.outcome).toEqual({ kind: "quit", reason: "q" });
    expect(feed(start(), "\x03").step.outcome).toEqual({ kind: "quit", reason: "ctrl_c" });
    expect(feed(start(), "\x04").step.outcome).toEqual({ kind: "quit", reason: "ctrl_d" });
    expect(endMenu(start().state).outcome).toEqual({ kind: "quit", reason: "eof" });
    const quit = feed(start(), "q");
    expect(quit.output).toContain("no target chosen");
    // Nothing happens after the end.
    expect(feedMenu(quit.step.state, Buffer.from("\r"))).toMatchObject({ output: "" });
    expect(feedMenu(quit.step.state, Buffer.from("\r")).outcome).toBeUndefined();
  });

  it("hands the bytes typed after Enter to the target (type-ahead), without the LF of a CRLF", () => {
    const { step } = feed(start(), "\x1b[B\r\nhostname\nexit\n");
    expect(step.outcome).toMatchObject({ kind: "chosen", alias: "beta" });
    expect(step.outcome?.kind === "chosen" && step.outcome.rest.toString()).toBe("hostname\nexit\n");
    const lf = feed(start(), "\nls\n").step.outcome;
    expect(lf?.kind === "chosen" && lf.rest.toString()).toBe("ls\n");
  });
});

describe("target menu: what it shows", () => {
  it("lists uid_alias and descriptions, numbered, the highlighted one marked", () => {
    const s = start();
    expect(s.output).toContain("choose a target for mario.rossi");
    expect(s.output).toContain("> 1) mario.rossi_alpha - first box");
    expect(s.output).toContain("  2) mario.rossi_beta - second box");
    expect(s.output).toContain("  3) mario.rossi_gamma");
    const moved = feedMenu(s.state, Buffer.from("\x1b[B"));
    expect(moved.output).toContain("> 2) mario.rossi_beta");
    // The redraw goes back up over the body it drew (3 entries + status line) and erases below.
    expect(moved.output.startsWith("\r\x1b[3A\x1b[J")).toBe(true);
  });

  it("renders hostile descriptions, aliases and uids inert", () => {
    const hostile = [
      { alias: "a\x1b]0;evil\x07", description: "\x1b]0;evil\x07 title" },
      { alias: "b", description: "\x1b[2J\x1b[H wipe \x9b31m \u202eevil\u202c \r\n\x08\x08" },
    ];
    const first = startMenu({ uid: "u\x1b[2Jx", entries: hostile });
    const { step, output } = feed(first, "\x1b[B", "2", "\x1b[A");
    expect(step.outcome).toBeUndefined();
    expect(ACTIVE.test(withoutOwnEscapes(output).replace(/\r\n/g, "").replace(/\r/g, ""))).toBe(false);
    expect(output).toContain("\\x1b]0;evil\\x07");
    expect(output).toContain("\\x1b[2J");
    expect(output).toContain("\\u202e");
    expect(output).not.toContain("\x1b]0;");
    expect(output).not.toContain("\x1b[2J");
    expect(output).not.toContain("\x1b[H");
  });

  it("cuts lines to the terminal's width and the list to its height, scrolling with the highlight", () => {
    const long = [{ alias: "x", description: "d".repeat(500) }];
    for (const line of start(long, { cols: 40 }).output.split("\r\n")) expect(withoutOwnEscapes(line).length).toBeLessThanOrEqual(39);
    const many = Array.from({ length: 50 }, (_, i) => ({ alias: `h${i + 1}` }));
    const s = start(many, { rows: 10 });
    // 6 entries fit (10 rows - header, blank, status, spare).
    expect(s.output).toContain("h6");
    expect(s.output).not.toContain("h7 ");
    const { step, output } = feed(s, "\x1b[B".repeat(20));
    expect(step.state.selected).toBe(20);
    expect(output.slice(output.lastIndexOf("\x1b[J"))).toContain("> 21) mario.rossi_h21");
    const resized = resizeMenu(step.state, 80, 30);
    expect(resized.output).toContain("> 21) mario.rossi_h21");
    expect(feedMenu(resized.state, Buffer.from("\r")).outcome).toMatchObject({ alias: "h21" });
  });
});

describe("target menu: bounds", () => {
  it("redraws at most once per chunk, however many keys it holds", () => {
    const { output } = feed(start(), "\x1b[B\x1b[A".repeat(5000));
    expect(output.length).toBeLessThan(2000);
  });

  it("keeps no more than a short unfinished escape sequence", () => {
    let step = start();
    step = feedMenu(step.state, Buffer.from(`\x1b[${"1;".repeat(4000)}`));
    expect(step.state.pending.length).toBe(0);
    step = feedMenu(step.state, Buffer.from("\x1b[1;"));
    expect(step.state.pending.length).toBeLessThanOrEqual(32);
    // The garbage never grows into a choice.
    expect(step.outcome).toBeUndefined();
  });

  it("ends after MAX_MENU_INPUT bytes without a choice", () => {
    let step = start();
    const chunk = Buffer.alloc(4096, 0x78); // 'x', ignored
    for (let i = 0; i < MAX_MENU_INPUT / 4096 + 2 && !step.outcome; i++) step = feedMenu(step.state, chunk);
    expect(step.outcome).toEqual({ kind: "quit", reason: "too_much_input" });
    // One enormous chunk too.
    expect(feedMenu(start().state, Buffer.alloc(MAX_MENU_INPUT * 4, 0x6a)).outcome).toEqual({ kind: "quit", reason: "too_much_input" });
    // A choice before the limit is a choice.
    const big = Buffer.concat([Buffer.alloc(1000, 0x78), Buffer.from("\r"), Buffer.alloc(MAX_MENU_INPUT * 2, 0x78)]);
    expect(feedMenu(start().state, big).outcome).toMatchObject({ kind: "chosen", alias: "alpha" });
  });

  it("refuses to start with no entries", () => {
    expect(() => start([])).toThrow(RangeError);
  });
});

describe("ssh uid@gateway ssh-config: the command line", () => {
  it("accepts exactly ssh-config, with or without --gateway HOST[:PORT]", () => {
    expect(parseSshConfigCommand("ssh-config")).toEqual({ kind: "ssh-config", gateway: undefined });
    expect(parseSshConfigCommand("  ssh-config  ")).toEqual({ kind: "ssh-config", gateway: undefined });
    expect(parseSshConfigCommand("ssh-config --gateway gw.example.org")).toEqual({
      kind: "ssh-config",
      gateway: { host: "gw.example.org", port: 22 },
    });
    expect(parseSshConfigCommand("ssh-config --gateway=203.0.113.10:2222")).toEqual({
      kind: "ssh-config",
      gateway: { host: "203.0.113.10", port: 2222 },
    });
    expect(parseSshConfigCommand("ssh-config --gateway '[2001:db8::1]:22'")).toEqual({
      kind: "ssh-config",
      gateway: { host: "2001:db8::1", port: 22 },
    });
  });

  it("is not ssh-config when the first word is something else (the caller refuses it as any exec)", () => {
    for (const c of ["id", "ssh-configx", "sh -c ssh-config", "", "echo ssh-config", "'ssh-config'x"])
      expect(parseSshConfigCommand(c), c).toBeUndefined();
  });

  it("refuses anything smuggled in after ssh-config", () => {
    const attacks = [
      "ssh-config; id",
      "ssh-config && id",
      "ssh-config | sh",
      "ssh-config $(id)",
      "ssh-config `id`",
      "ssh-config > /tmp/x",
      "ssh-config --gateway 'x\nProxyCommand evil'",
      String.raw`ssh-config --gateway 'x\nProxyCommand evil'`,
      "ssh-config --gateway 'x ProxyCommand evil'",
      'ssh-config --gateway "x\tProxyCommand=evil"',
      "ssh-config --gateway $HOME",
      "ssh-config --gateway *",
      "ssh-config --gateway gw#comment",
      "ssh-config --gateway gw:0",
      "ssh-config --gateway gw:65536",
      "ssh-config --gateway gw:22:33",
      "ssh-config --gateway '[::1]x'",
      "ssh-config --gateway",
      "ssh-config --gateway gw extra",
      "ssh-config --other",
      "ssh-config --gateway=%h",
      "ssh-config # comment",
      `ssh-config --gateway ${"a".repeat(600)}`,
    ];
    for (const c of attacks) expect(parseSshConfigCommand(c)?.kind, JSON.stringify(c)).toBe("invalid");
  });

  it("reads a backslash outside quotes as the shell does (one harmless word)", () => {
    expect(parseSshConfigCommand(String.raw`ssh-config --gateway x\nProxyCommand`)).toEqual({
      kind: "ssh-config",
      gateway: { host: "xnProxyCommand", port: 22 },
    });
  });

  it("parseGatewayAddress takes host names, IPv4 and IPv6 only", () => {
    expect(parseGatewayAddress("gw")).toEqual({ host: "gw", port: 22 });
    expect(parseGatewayAddress("::1")).toEqual({ host: "::1", port: 22 });
    expect(parseGatewayAddress("[2001:db8::10.0.0.1]:2222")).toEqual({ host: "2001:db8::10.0.0.1", port: 2222 });
    expect(parseGatewayAddress("1:2:3:4:5:6:7:8")).toEqual({ host: "1:2:3:4:5:6:7:8", port: 22 });
    for (const bad of [
      "",
      "-gw",
      "gw..x",
      "gw/x",
      "a b",
      "x\ny",
      "[gw]:22",
      "gw:",
      "[::1]:0",
      "a:b:c",
      "1:2:3",
      "1::2::3",
      "[12345::1]",
      "::g",
    ])
      expect(parseGatewayAddress(bad), JSON.stringify(bad)).toBeUndefined();
  });

  it("renderSshConfig refuses a host or alias that would add options, and escapes descriptions", () => {
    const base = { uid: "mario.rossi", routes: [{ alias: "vm1", description: "\x1b[2J box\nProxyCommand evil" }], port: 22, hostKeys: [] };
    const text = renderSshConfig({ ...base, host: "gw.example.org" });
    expect(text).toContain("    # \\x1b[2J box\\nProxyCommand evil\n");
    expect(text.split("\n").filter((l) => l.trimStart().startsWith("ProxyCommand"))).toEqual([]);
    expect(() => renderSshConfig({ ...base, host: "x\nProxyCommand evil" })).toThrow(TypeError);
    expect(() => renderSshConfig({ ...base, host: "gw", routes: [{ alias: "a b", description: undefined }] })).toThrow(TypeError);
    expect(() => renderSshConfig({ ...base, host: "gw", uid: "a\nb" })).toThrow(TypeError);
  });
});
