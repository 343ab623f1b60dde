#!/bin/sh
# SSH_ASKPASS helper for tests: answers OpenSSH's prompts by their text (OpenSSH prefixes "(user@host) ").
case "$1" in
  *"Verification code:"*) printf '%s\n' "$VARCO_TEST_CODE" ;;
  *"Password:"*) printf '%s\n' "$VARCO_TEST_PASSWORD" ;;
  *) printf '%s\n' "$1" >> "${VARCO_TEST_ASKPASS_LOG:-/dev/null}"; exit 1 ;;
esac
