/**
 * The console's own static files (served from memory) and the asciinema-player bundle (served from
 * node_modules/asciinema-player/dist/bundle, never a CDN). Page behaviour lives here because the
 * CSP allows no inline script.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

/** The page script: starts the player on `#player` and seeks on `#t=SECONDS` links. */
export const CONSOLE_JS = `"use strict";
(function () {
  var el = document.getElementById("player");
  if (!el || !window.AsciinemaPlayer) return;
  var at = function () {
    var m = /^#t=([0-9]+(?:\\.[0-9]+)?)$/.exec(location.hash);
    return m ? Number(m[1]) : undefined;
  };
  var start = at();
  var opts = { speed: Number(el.dataset.speed) || 1, idleTimeLimit: Number(el.dataset.idle) || 2, fit: "width", preload: true };
  if (start !== undefined) opts.startAt = start;
  var player = window.AsciinemaPlayer.create(el.dataset.src, el, opts);
  window.varcoPlayer = player;
  window.addEventListener("hashchange", function () {
    var t = at();
    if (t === undefined) return;
    Promise.resolve(player.seek(t)).then(function () { return player.play(); });
    el.scrollIntoView();
  });
})();
`;

/** The console's style sheet. */
export const CONSOLE_CSS = `body{font-family:system-ui,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
header{background:#20303c;color:#fff;padding:.5rem 1rem;display:flex;gap:1rem;align-items:center}
header a{color:#cfe3ff;margin-right:.75rem}header nav{display:flex;gap:.5rem;align-items:center;flex:1}
.who{margin-left:auto}main{padding:1rem}table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{border-bottom:1px solid #ddd;padding:.25rem .5rem;text-align:left;font-size:.9rem;vertical-align:top}
td.what,code{font-family:ui-monospace,monospace;white-space:pre-wrap;word-break:break-all}
.ok{color:#126b12}.bad{color:#b00020;font-weight:bold}.error{color:#b00020}
form.inline{display:inline}form.login{display:flex;flex-direction:column;gap:.5rem;max-width:20rem}
form.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end}
#player{max-width:60rem;margin:.5rem 0}
`;

/** The folder of the asciinema-player bundle (`asciinema-player.min.js`, `asciinema-player.css`). */
export function playerBundleDir(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve("asciinema-player/dist/bundle/asciinema-player.min.js")));
}

/** The player bundle files, read once. */
export function playerAssets(dir = playerBundleDir()): { js: Buffer; css: Buffer } {
  return { js: readFileSync(join(dir, "asciinema-player.min.js")), css: readFileSync(join(dir, "asciinema-player.css")) };
}
