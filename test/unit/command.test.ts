/**
 * parseCommand: the attacker's spellings first (each must come out as a plain `exec`), then the
 * exact lines OpenSSH 9.2 `scp -O`, rsync 3.x, git 2.39 and `sftp -s` send (captured by running
 * each client with a fake `ssh` that logs its argv).
 */
import { describe, expect, it } from "vitest";
import { isTransfer, parseCommand } from "../../src/routing/index.ts";

const ATTACKS = [
  "scp -f x; bash -i",
  "scp -f x;bash -i",
  "scp -t x && sh",
  "scp -t x || sh",
  "scp -t x | sh",
  "scp -t x & sh",
  "scp -t $(id)",
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal ${...} is the attack
  "scp -t ${HOME}",
  "scp -t $HOME",
  "scp -t `id`",
  "scp -t x`id`",
  "scp -t x\nbash",
  "scp -t x\rbash",
  "scp -t x\0bash",
  "scp -t x\tbash",
  "scp -t x\u0085bash",
  "scp -t 'a'';id'",
  "scp -t 'a;id'",
  "scp -t a\\;id",
  "scp -t x > /etc/y",
  "scp -t x 2>/etc/y",
  "scp -t x</etc/passwd",
  "scp -t <(id)",
  "scp -t (x)",
  "SCP -t x",
  "Scp -t x",
  "scp -x -t x",
  "scp -t",
  "scp -f",
  "scp -t a b",
  "scp -t -f x",
  "scp -tf x",
  "scp -t -t x",
  "scp x",
  "scp -r x",
  "scp -t -- -x",
  "scp -t -x",
  "scp -t ''",
  "scp -o ProxyCommand=sh -t x",
  "scp -S /bin/sh -t x",
  "env scp -t x",
  "exec scp -t x",
  "command scp -t x",
  "FOO=1 scp -t x",
  "/usr/bin/scp -t x",
  "'scp' -t x",
  "s\\cp -t x",
  '"scp" -t x',
  " scp -t x",
  "scp -t x #c",
  "scp -t a#b",
  "scp -t *",
  "scp -f *.txt",
  "scp -f x?",
  "scp -f [ab]",
  "scp -f {a,b}",
  "scp -f x!",
  "scp -t x^id",
  "scp -t 'x",
  "scp -t x'",
  "scp -t x\\",
  "scp -t 'a\\' b '",
  'scp -t "x"',
  "scp -t x\u202e",
  // Whitespace only JavaScript splits on (shells split on ASCII space and tab): the audited path would differ from scp's.
  "scp -t x\ufeff",
  "scp -f\u3000x",
  "scp -r\u00a0-t x",
  "scp -t\u2003x",
  "scp -t x\u200b",
  "rsync --server . x; id",
  "rsync ; exec bash -l",
  "rsync",
  "rsync --server",
  "rsync --server -logDtpre.iLsfxCIvu",
  "rsync --server -e.LsfxCIvu . x | sh",
  "rsync --daemon --server .",
  "rsync --server --daemon --config=/tmp/evil.conf . x",
  "rsync --server --config=/tmp/evil.conf . x",
  "rsync --server --dparam=pre-xfer\\ exec=/bin/sh . x",
  "rsync --server --log-file=/tmp/l -e.L . x",
  "rsync --server --rsh=sh . x",
  "rsync --server -Me.L . x",
  "rsync --server . -x",
  "rsync --server foo . x",
  "rsync --server --temp-dir",
  "rsync --server --sender --sender . x",
  "rsync --server -e.L . $(id)",
  "rsync -e.L --server . x",
  "rsync-server --server . x",
  "git-upload-pack 'r'; id",
  "git-upload-pack 'r' extra",
  "git-upload-pack",
  "git-upload-pack ''",
  "git-upload-pack '--help'",
  "git-upload-pack 'r'$(id)",
  "git-upload-pack 'r\nid'",
  "git upload-pack 'r'",
  "git-shell -c 'git-upload-pack r'",
  "/usr/lib/openssh/sftp-server; sh",
  "/usr/lib/openssh/sftp-server && sh",
  "/usr/lib/openssh/sftp-server -d /",
  "/usr/lib/openssh/sftp-server\nsh",
  "/usr/lib/openssh/../openssh/sftp-server",
  "/tmp/sftp-server",
  "sftp-server",
  "internal-sftp",
  "",
];

describe("attacker's spellings are plain exec", () => {
  for (const c of ATTACKS)
    it(JSON.stringify(c), () => {
      const p = parseCommand(c);
      expect(p.kind).toBe("exec");
      expect(isTransfer(p)).toBe(false);
    });
});

describe("what real clients send", () => {
  it("scp -O download, upload, recursive, preserve, to a directory", () => {
    expect(parseCommand("scp -f /a/b.txt")).toEqual({ kind: "scp", mode: "from", recursive: false, path: "/a/b.txt" });
    expect(parseCommand("scp -r -f dir")).toEqual({ kind: "scp", mode: "from", recursive: true, path: "dir" });
    expect(parseCommand("scp -p -t x")).toEqual({ kind: "scp", mode: "to", recursive: false, path: "x" });
    expect(parseCommand("scp -r -p -t dir")).toEqual({ kind: "scp", mode: "to", recursive: true, path: "dir" });
    expect(parseCommand("scp -d -t dir/")).toEqual({ kind: "scp", mode: "to", recursive: false, path: "dir/" });
    expect(parseCommand("scp -v -t -- x")).toEqual({ kind: "scp", mode: "to", recursive: false, path: "x" });
    expect(parseCommand("scp -rpt ~/in")).toEqual({ kind: "scp", mode: "to", recursive: true, path: "~/in" });
    expect(parseCommand("scp -f età.txt")).toMatchObject({ kind: "scp", path: "età.txt" });
  });

  it("scp -O with a path the remote shell would split is not a single-path scp", () => {
    // OpenSSH 9.2 sends `h:'dir with space'` unquoted; the remote scp would see three operands and fail.
    expect(parseCommand("scp -r -p -t dir with space").kind).toBe("exec");
  });

  it("rsync both directions, escaped spaces, long options, two-word options", () => {
    expect(parseCommand("rsync --server -e.LsfxCIvu . dest/")).toEqual({ kind: "rsync", sender: false, paths: ["dest/"] });
    expect(parseCommand("rsync --server --sender -vlogDtpre.iLsfxCIvu . src/")).toEqual({ kind: "rsync", sender: true, paths: ["src/"] });
    expect(parseCommand("rsync --server -logDtprze.iLsfxCIvu --delete . d\\ d")).toEqual({ kind: "rsync", sender: false, paths: ["d d"] });
    expect(parseCommand("rsync --server --sender -e.LsfxCIvu . a b")).toEqual({ kind: "rsync", sender: true, paths: ["a", "b"] });
    expect(
      parseCommand(
        "rsync --server -be.LsfxCIvu --timeout=5 --bwlimit=100 --backup-dir bk --suffix=.old --max-size=1048576 --partial-dir .p --temp-dir t --link-dest /l . x",
      ),
    ).toEqual({ kind: "rsync", sender: false, paths: ["x"] });
  });

  it("rsync whose options could run something is an exec (needs allow.exec, recorded)", () => {
    // -s: the real options arrive on stdin, unchecked (e.g. --daemon --config=FILE with a pre-xfer exec).
    for (const c of [
      "rsync --server -se.LsfxCIvu",
      "rsync --server -s .",
      "rsync --server --sender -vse.LsfxCIvu . x",
      "rsync --server --log-file=x . y",
      "rsync --server --log-file x . y",
      "rsync --server --write-batch=b . y",
      "rsync --server --config=c . y",
      "rsync --server --daemon .",
      "rsync --server --early-input=f . y",
      "rsync --server --some-future-option . y",
      "rsync --server -M--log-file=x . y",
    ])
      expect(parseCommand(c).kind, c).toBe("exec");
  });

  it("git clone, push, archive", () => {
    expect(parseCommand("git-upload-pack 'repo.git'")).toEqual({ kind: "git", service: "git-upload-pack", path: "repo.git" });
    expect(parseCommand("git-upload-pack '/srv/repo.git'")).toEqual({ kind: "git", service: "git-upload-pack", path: "/srv/repo.git" });
    expect(parseCommand("git-receive-pack 'repo.git'")).toEqual({ kind: "git", service: "git-receive-pack", path: "repo.git" });
    expect(parseCommand("git-upload-archive 'repo.git'")).toEqual({ kind: "git", service: "git-upload-archive", path: "repo.git" });
    expect(parseCommand("git-upload-pack '~u/my repo'")).toEqual({ kind: "git", service: "git-upload-pack", path: "~u/my repo" });
    // git quotes a ' in a path as '\'' (quote.c sq_quote_buf).
    expect(parseCommand("git-upload-pack 'it'\\''s'")).toEqual({ kind: "git", service: "git-upload-pack", path: "it's" });
  });

  it("sftp -s /usr/lib/openssh/sftp-server", () => {
    expect(parseCommand("/usr/lib/openssh/sftp-server")).toEqual({ kind: "sftp", program: "/usr/lib/openssh/sftp-server" });
    expect(parseCommand("/usr/libexec/openssh/sftp-server")).toMatchObject({ kind: "sftp" });
  });
});

describe("exec argv for display", () => {
  it("splits plain commands into words and gives up on operators, globs and expansions", () => {
    expect(parseCommand("ls -l '/tmp/a b'")).toEqual({ kind: "exec", argv: ["ls", "-l", "/tmp/a b"] });
    expect(parseCommand("scp -t a b")).toEqual({ kind: "exec", argv: ["scp", "-t", "a", "b"] });
    expect(parseCommand("echo a; id")).toEqual({ kind: "exec", argv: undefined });
    expect(parseCommand("ls *.txt")).toEqual({ kind: "exec", argv: undefined });
    expect(parseCommand("echo $HOME")).toEqual({ kind: "exec", argv: undefined });
    expect(parseCommand("ls # c")).toEqual({ kind: "exec", argv: undefined });
  });
});
