export { createLogger, type Logger } from "./logger.ts";
export {
  createMetrics,
  type GatewayMetrics,
  type HealthCheck,
  type HealthEndpoint,
  type MetricsRegistry,
  NO_METRICS,
  serveHealth,
} from "./metrics.ts";
export { printable, printableJson } from "./printable.ts";
