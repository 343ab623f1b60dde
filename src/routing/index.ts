export { authorizeChannel, type ChannelDecision, type ChannelRequest, execPermission, type Permission } from "./authorize.ts";
export { type GitService, isTransfer, type ParsedCommand, parseCommand, SFTP_SERVER_PATHS } from "./command.ts";
export { authorizeJump, type JumpDecision, jumpHostMatches } from "./jump.ts";
export {
  type ApprovedTarget,
  aliasesFor,
  type RouteDecision,
  type RouteSubject,
  refusalMessage,
  resolveRoute,
  routesFor,
} from "./route.ts";
export {
  CONTROL_PERSIST,
  parseGatewayAddress,
  parseSshConfigCommand,
  renderSshConfig,
  SSH_CONFIG_USAGE,
  type SshConfigCommand,
  type SshConfigInput,
} from "./ssh-config.ts";
