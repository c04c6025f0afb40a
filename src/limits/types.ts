/** Shapes shared by the WorkspaceLimiter Durable Object, its core and the isolate-side client. */

/** One token bucket; its config comes with every call, read by the caller from the workspace's plan. */
export interface RateLimitRule {
  /** Bucket name within the workspace, e.g. "workspace" or "key:key_123". */
  name: string;
  ratePerSecond: number;
  burst: number;
}

export interface BucketSnapshot {
  name: string;
  /** The bucket's burst. */
  limit: number;
  /** Whole tokens left after this call. */
  remaining: number;
  /** Milliseconds until the bucket is full again. */
  resetMs: number;
}

export interface AcquireInput {
  rules: RateLimitRule[];
  /** Tokens wanted; up to this many are granted. */
  tokens: number;
}

export interface AcquireResult {
  /** Tokens taken from every bucket at once: 0..tokens. */
  granted: number;
  /** With nothing granted: milliseconds until one token is available in every bucket; else 0. */
  retryAfterMs: number;
  buckets: BucketSnapshot[];
}

export interface ReleaseInput {
  rules: RateLimitRule[];
  /** Leased tokens that were not used. */
  tokens: number;
}

export interface StrikeInput {
  /** The client, e.g. "ip:203.0.113.7" or "key_prefix:mgx_ab12". */
  key: string;
  threshold: number;
  windowMs: number;
  cooldownMs: number;
}

export interface StrikeResult {
  /** Strikes in the current window (the window restarts when a block begins). */
  strikes: number;
  blocked: boolean;
  blockedUntilMs: number | null;
  /** True only for the strike that started this block. */
  newlyBlocked: boolean;
}

/** Core inputs carry the clock; the Durable Object supplies its own. */
export type Clocked<T> = T & { nowMs: number };
