export { playerAssets } from "./assets.ts";
export { roleOf, type WebLoginResult, type WebLoginRuntime, type WebSettings, webLogin } from "./auth.ts";
export { Html, html, text } from "./escape.ts";
export { startWebForGateway, type WebGatewayOptions } from "./gateway.ts";
export { startWebConsole, type WebListener } from "./listen.ts";
export { openWebAuditRead, type WebAuditReadHandle } from "./read.ts";
export { CSP, createWebApp, type LiveControl, type LiveSessionInfo, type WebAuditRead, type WebConsoleDeps } from "./server.ts";
export { createWebSessions, type WebRole, type WebSession, type WebSessions } from "./sessions.ts";
