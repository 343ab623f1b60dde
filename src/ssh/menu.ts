/**
 * The target menu of a login without an alias (`ssh uid@gateway` with a terminal), as a pure state
 * machine: input bytes in, a new state and the bytes to write out. No timers, no I/O; the session
 * adapter (session.ts) feeds it the channel's data and writes what it returns.
 *
 * Keys (as a terminal in raw mode sends them, ECMA-48 / xterm ctlseqs): cursor up/down as CSI A/B
 * (`ESC [ A`, with any parameters, e.g. `ESC [ 1 ; 5 A`) or SS3 A/B (`ESC O A`, application cursor
 * mode), `k`/`j`; digits type an entry number; Enter (CR or LF) chooses the typed number, else the
 * highlighted entry; Backspace/DEL removes a typed digit; `q`, Ctrl-C, Ctrl-D and the end of input
 * leave. Anything else, including every other escape sequence, is ignored. A sequence split across
 * chunks is completed by the next chunk.
 *
 * Everything shown that comes from the policy (aliases, descriptions) or the directory (uid) is
 * escaped with {@link printable}; lines are cut to the terminal's width and the list to its height,
 * so the redraw (cursor up + erase below) always lands where it started.
 */
import { printable } from "../obs/printable.ts";

export interface MenuEntry {
  readonly alias: string;
  readonly description?: string | undefined;
}

export interface MenuOptions {
  /** The canonical uid (shown in the header and as `uid_alias`). */
  readonly uid: string;
  /** The aliases to offer, in display order (at least one). */
  readonly entries: readonly MenuEntry[];
  /** Terminal size (from the pty request); defaults 80×24. */
  readonly cols?: number | undefined;
  readonly rows?: number | undefined;
}

export type MenuQuitReason = "q" | "ctrl_c" | "ctrl_d" | "eof" | "too_much_input";

export type MenuOutcome =
  | {
      readonly kind: "chosen";
      readonly alias: string;
      /** 1-based entry number. */
      readonly number: number;
      /** Bytes that followed the Enter in the same chunk (type-ahead for the target's shell). */
      readonly rest: Buffer;
    }
  | { readonly kind: "quit"; readonly reason: MenuQuitReason };

export interface MenuState {
  readonly uid: string;
  readonly entries: readonly MenuEntry[];
  readonly cols: number;
  readonly rows: number;
  /** Highlighted entry, 0-based. */
  readonly selected: number;
  /** Digits typed since the last move (at most {@link MAX_TYPED}). */
  readonly typed: string;
  /** An escape sequence begun at the end of the last chunk (at most {@link MAX_SEQUENCE} bytes). */
  readonly pending: Buffer;
  /** The last CR ended a chunk: a LF starting the next one belongs to it. */
  readonly afterCr: boolean;
  /** Input bytes consumed so far (bounded by {@link MAX_MENU_INPUT}). */
  readonly received: number;
  /** First entry shown (the list scrolls when it is taller than the terminal). */
  readonly top: number;
  /** Lines of the last drawn body (list + status line): how far the next redraw moves up. */
  readonly drawn: number;
  readonly notice: string;
  readonly outcome: MenuOutcome | undefined;
}

export interface MenuStep {
  readonly state: MenuState;
  /** Bytes to write to the terminal (may be empty). */
  readonly output: string;
  /** Set once, on the step that ended the menu. */
  readonly outcome?: MenuOutcome | undefined;
}

/** Input a menu accepts before it gives up (bytes): holding a key down for minutes stays far below. */
export const MAX_MENU_INPUT = 64 * 1024;
/** Longest escape sequence kept across chunks; a longer one is dropped as garbage. */
export const MAX_SEQUENCE = 32;
/** Most digits kept of a typed number. */
export const MAX_TYPED = 6;

const ESC = 0x1b;
const REVERSE = "\x1b[7m";
const RESET = "\x1b[0m";
const ERASE_BELOW = "\x1b[J";

function clampSize(n: number | undefined, fallback: number, min: number, max: number): number {
  return n === undefined || !Number.isFinite(n) || n <= 0 ? fallback : Math.min(max, Math.max(min, Math.floor(n)));
}

/** How many entries fit: the terminal minus header, blank line, status line and one spare. */
function visibleCount(s: Pick<MenuState, "rows" | "entries">): number {
  return Math.max(1, Math.min(s.entries.length, s.rows - 4));
}

/** The first visible entry that keeps `selected` in view, moving as little as possible. */
function scrolled(s: MenuState, selected: number): number {
  const n = visibleCount(s);
  let top = Math.min(s.top, Math.max(0, s.entries.length - n));
  if (selected < top) top = selected;
  if (selected >= top + n) top = selected - n + 1;
  return top;
}

function numberWidth(count: number): number {
  return String(count).length;
}

/** One list line, cut to the terminal's width (counted in code points of the escaped text). */
function entryLine(s: MenuState, i: number): string {
  const e = s.entries[i] as MenuEntry;
  const width = s.cols - 1;
  const num = String(i + 1).padStart(numberWidth(s.entries.length));
  const mark = i === s.selected ? ">" : " ";
  const head = printable(`${mark} ${num}) ${s.uid}_${e.alias}`, width);
  const room = width - [...head].length - 3;
  const desc = e.description && room >= 2 ? ` - ${printable(e.description, room)}` : "";
  const text = head + desc;
  return i === s.selected ? `${REVERSE}${text}${RESET}` : text;
}

function statusLine(s: MenuState): string {
  const hint = s.typed ? `number: ${s.typed}` : "up/down or a number, Enter to connect, q to quit";
  return printable(s.notice ? `${s.notice}  (${hint})` : hint, s.cols - 1);
}

/** The list and the status line; the cursor ends at the end of the status line. */
function body(s: MenuState): { text: string; lines: number } {
  const n = visibleCount(s);
  const lines: string[] = [];
  for (let i = s.top; i < s.top + n; i++) lines.push(entryLine(s, i));
  lines.push(statusLine(s));
  return { text: lines.join("\r\n"), lines: lines.length };
}

/** Redraws the body over the previous one. */
function redraw(s: MenuState): { state: MenuState; output: string } {
  const b = body(s);
  const up = s.drawn > 1 ? `\x1b[${s.drawn - 1}A` : "";
  return { state: { ...s, drawn: b.lines }, output: `\r${up}${ERASE_BELOW}${b.text}` };
}

/**
 * Starts a menu: the header and the list, first entry highlighted.
 * @throws RangeError when `entries` is empty (the caller prints the refusal instead).
 */
export function startMenu(o: MenuOptions): MenuStep {
  if (o.entries.length === 0) throw new RangeError("a menu needs at least one entry");
  const s: MenuState = {
    uid: o.uid,
    entries: o.entries,
    cols: clampSize(o.cols, 80, 20, 1000),
    rows: clampSize(o.rows, 24, 5, 1000),
    selected: 0,
    typed: "",
    pending: Buffer.alloc(0),
    afterCr: false,
    received: 0,
    top: 0,
    drawn: 0,
    notice: "",
    outcome: undefined,
  };
  const header = printable(`varco: choose a target for ${o.uid}`, s.cols - 1);
  const b = body(s);
  return { state: { ...s, drawn: b.lines }, output: `\r\n${header}\r\n\r\n${b.text}` };
}

/** Moves the highlight to `selected` (clamped), forgetting typed digits. */
function moveTo(s: MenuState, selected: number): MenuState {
  const sel = Math.max(0, Math.min(s.entries.length - 1, selected));
  return { ...s, selected: sel, top: scrolled(s, sel), typed: "", notice: "" };
}

/** The state after typing digit `d`: the number moves the highlight when it names an entry. */
function typeDigit(s: MenuState, d: string): MenuState {
  const typed = (s.typed.length >= Math.min(MAX_TYPED, numberWidth(s.entries.length)) ? "" : s.typed) + d;
  const n = Number(typed);
  if (n >= 1 && n <= s.entries.length) return { ...s, typed, selected: n - 1, top: scrolled(s, n - 1), notice: "" };
  return { ...s, typed, notice: `no entry ${typed}` };
}

/** Ends with `outcome`: the final redraw (highlight kept) and a line saying what happens next. */
function finish(s: MenuState, outcome: MenuOutcome): MenuStep {
  const ended = { ...s, notice: "", typed: "", pending: Buffer.alloc(0), outcome };
  const r = redraw(ended);
  const last =
    outcome.kind === "chosen"
      ? `varco: connecting to ${s.uid}_${outcome.alias}...`
      : outcome.reason === "too_much_input"
        ? "varco: too much input for the menu; no target chosen."
        : "varco: no target chosen.";
  return { state: r.state, output: `${r.output}\r\n${printable(last, s.cols - 1)}\r\n`, outcome };
}

/**
 * Where an escape sequence starting at `buf[i]` (an ESC) ends: `{ end, key }` with `end` the index
 * after it, or `undefined` when the buffer ends inside it.
 */
function escapeSequence(buf: Buffer, i: number): { end: number; key: "up" | "down" | undefined } | undefined {
  if (i + 1 >= buf.length) return undefined;
  const kind = buf[i + 1] as number;
  if (kind === 0x4f) {
    // SS3: one final byte.
    if (i + 2 >= buf.length) return undefined;
    const f = buf[i + 2];
    return { end: i + 3, key: f === 0x41 ? "up" : f === 0x42 ? "down" : undefined };
  }
  if (kind === 0x5b) {
    // CSI: parameter bytes 0x30–0x3F, intermediate bytes 0x20–0x2F, one final byte 0x40–0x7E (ECMA-48 §5.4).
    for (let j = i + 2; j < buf.length; j++) {
      const b = buf[j] as number;
      if (b >= 0x40 && b <= 0x7e) return { end: j + 1, key: b === 0x41 ? "up" : b === 0x42 ? "down" : undefined };
      if (b < 0x20 || b > 0x3f) return { end: j, key: undefined };
    }
    return undefined;
  }
  // ESC followed by anything else (Alt+key, a lone Escape): the ESC alone is dropped.
  return { end: i + 1, key: undefined };
}

/**
 * Feeds input bytes. Returns the new state, the redraw (at most one per call, whatever the chunk's
 * size) and, when the input ended the menu, the outcome; after that, further input is ignored.
 */
export function feedMenu(state: MenuState, chunk: Buffer): MenuStep {
  if (state.outcome) return { state, output: "" };
  const buf = state.pending.length > 0 ? Buffer.concat([state.pending, chunk]) : chunk;
  let s: MenuState = { ...state, pending: Buffer.alloc(0) };
  const before = s;
  const startReceived = state.received - state.pending.length;
  let i = 0;
  if (s.afterCr && buf[0] === 0x0a) i = 1;
  s = { ...s, afterCr: false };
  while (i < buf.length) {
    if (startReceived + i >= MAX_MENU_INPUT) return finish(s, { kind: "quit", reason: "too_much_input" });
    const b = buf[i] as number;
    if (b === ESC) {
      const seq = escapeSequence(buf, i);
      if (!seq) {
        const tail = buf.subarray(i);
        // An unfinished sequence waits for the next chunk, unless it is already too long to be a key.
        if (tail.length <= MAX_SEQUENCE) s = { ...s, pending: Buffer.from(tail) };
        i = buf.length;
        break;
      }
      if (seq.key === "up") s = moveTo(s, s.selected - 1);
      else if (seq.key === "down") s = moveTo(s, s.selected + 1);
      i = seq.end;
      continue;
    }
    i += 1;
    if (b === 0x0d || b === 0x0a) {
      if (b === 0x0d) {
        if (buf[i] === 0x0a) i += 1;
        else if (i === buf.length) s = { ...s, afterCr: true };
      }
      if (s.typed) {
        const n = Number(s.typed);
        if (n < 1 || n > s.entries.length) {
          s = { ...s, typed: "", notice: `no entry ${s.typed}` };
          continue;
        }
        s = { ...s, selected: n - 1 };
      }
      const e = s.entries[s.selected] as MenuEntry;
      const taken = { ...s, received: startReceived + i };
      return finish(taken, { kind: "chosen", alias: e.alias, number: s.selected + 1, rest: Buffer.from(buf.subarray(i)) });
    }
    if (b >= 0x30 && b <= 0x39) s = typeDigit(s, String.fromCharCode(b));
    else if (b === 0x7f || b === 0x08) s = s.typed ? { ...s, typed: s.typed.slice(0, -1), notice: "" } : s;
    else if (b === 0x71 || b === 0x51) return finish(s, { kind: "quit", reason: "q" });
    else if (b === 0x03) return finish(s, { kind: "quit", reason: "ctrl_c" });
    else if (b === 0x04) return finish(s, { kind: "quit", reason: "ctrl_d" });
    else if (b === 0x6b) s = moveTo(s, s.selected - 1);
    else if (b === 0x6a) s = moveTo(s, s.selected + 1);
  }
  s = { ...s, received: startReceived + buf.length };
  if (s.selected === before.selected && s.typed === before.typed && s.notice === before.notice && s.top === before.top)
    return { state: s, output: "" };
  return redraw(s);
}

/** The end of input (the client's EOF, RFC 4254 §5.3): the menu ends without a choice. */
export function endMenu(state: MenuState): MenuStep {
  if (state.outcome) return { state, output: "" };
  return finish(state, { kind: "quit", reason: "eof" });
}

/** The terminal was resized (window-change, RFC 4254 §6.7): the list is redrawn to fit. */
export function resizeMenu(state: MenuState, cols: number, rows: number): MenuStep {
  if (state.outcome) return { state, output: "" };
  const s = { ...state, cols: clampSize(cols, state.cols, 20, 1000), rows: clampSize(rows, state.rows, 5, 1000) };
  return redraw({ ...s, top: scrolled(s, s.selected) });
}
