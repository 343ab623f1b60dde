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
