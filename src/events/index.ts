/** What other domains use from events: the one publish path and the contract's types. */
export {
  EVENT_TYPES,
  type EventDataMap,
  type EventType,
  type MgxEvent,
  type PublishedEvent,
  validateEvent,
} from "./catalog.ts";
export { EventParkedError, logUndelivered } from "./parked.ts";
export {
  activeTraceId,
  InvalidEventError,
  type PublishContext,
  type PublishEnv,
  type PublishInput,
  publish,
} from "./publish.ts";
export { isTicketAuthenticatedRequest } from "./tickets.ts";
