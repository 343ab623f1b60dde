export {
  checkAccountSyntax,
  DEFAULT_UID_PATTERN,
  MAX_USERNAME_BYTES,
  splitAccount,
  truncateUtf8,
} from "./account.ts";
export { type Authenticator, type AuthenticatorParts, createAuthenticator, type GatewayAccount } from "./authenticator.ts";
export {
  createLdapDirectory,
  type Directory,
  DirectoryUnavailableError,
  type DirectoryVerdict,
  fillFilter,
  firstRdnValue,
  type LdapConfig,
  type LdapDirectory,
} from "./ldap.ts";
export { createLocalUsers, hashPassword, type LocalUser, LocalUserError, type LocalUsers } from "./local.ts";
export { type LockedAttempts, type Lockout, type LockoutSettings, lockoutOn, MAX_LOCKED_KEYS, openLockout } from "./lockout.ts";
export {
  type Account,
  type AccountLookup,
  AuthenticatedIdentity,
  CODE_PROMPT,
  type Credential,
  createLogin,
  type Enrolment,
  type FactorVerdict,
  type Login,
  type LoginEvent,
  type LoginFactors,
  type LoginStep,
  PASSWORD_PROMPT,
  type Prompt,
} from "./login.ts";
export { findKey, keysFilePath, parseAuthorizedKeys } from "./publickey.ts";
export { chainRemembers, keyFingerprint, LOCAL_TOTP_BINDING, REMEMBER_MAX_MS, rememberedValid, rememberNetwork } from "./remember.ts";
export { displayAddress, sourceKey } from "./source.ts";
export {
  checkCandidate,
  currentCode,
  directorySecretBinding,
  loadOrCreateKey,
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
  totpKeyCheck,
  totpStoreOn,
} from "./totp.ts";
