#!/bin/sh
# SSH_ASKPASS helper for tests: answers OpenSSH's prompts by their text (OpenSSH prefixes "(user@host) ").
# With VARCO_TEST_ASKPASS_LOG set, every prompt is also appended to that file.
[ -n "$VARCO_TEST_ASKPASS_LOG" ] && printf '%s\n' "$1" >> "$VARCO_TEST_ASKPASS_LOG"
case "$1" in
  *"Verification code:"*) printf '%s\n' "$VARCO_TEST_CODE" ;;
  *"Password:"*) printf '%s\n' "$VARCO_TEST_PASSWORD" ;;
  # OpenSSH's own prompt for the password method: answered only when a test asks for it.
  *"'s password:"*) [ -n "$VARCO_TEST_PASSWORD_METHOD" ] && printf '%s\n' "$VARCO_TEST_PASSWORD" || exit 1 ;;
  *) exit 1 ;;
esac
