export {
  type Authenticator,
  type AuthenticatorParts,
  createAuthenticator,
  type Enrolment,
  type PasswordVerdict,
  type TotpVerdict,
} from "./authenticator.ts";
export {
  createLdapDirectory,
  type Directory,
  DirectoryUnavailableError,
  type DirectoryVerdict,
  fillFilter,
  firstRdnValue,
  type LdapConfig,
} from "./ldap.ts";
export { createLocalUsers, hashPassword, type LocalUser, LocalUserError, type LocalUsers } from "./local.ts";
export { type Lockout, type LockoutSettings, openLockout } from "./lockout.ts";
export { findKey, keysFilePath, parseAuthorizedKeys } from "./publickey.ts";
export {
  checkCandidate,
  currentCode,
  newOneTimeCode,
  newRecoveryCodes,
  newSecret,
  normaliseOneTimeCode,
  normaliseSecret,
  openTotpStore,
  otpauthUri,
  TotpSecretError,
  type TotpSettings,
  type TotpStore,
} from "./totp.ts";
