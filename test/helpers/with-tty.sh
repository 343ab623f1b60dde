#!/bin/bash
# Runs a command with a controlling terminal (some players, e.g. `asciinema cat`, open /dev/tty).
# Arguments are quoted with printf %q, so nothing is re-interpreted by the shell that script(1) starts.
exec script -qec "$(printf '%q ' "$@")" /dev/null < /dev/null
