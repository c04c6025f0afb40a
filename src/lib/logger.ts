import type { LogLevel } from "../env.ts";
import { redact, serializeError } from "./redact.ts";

/**
 * The one logger: one JSON object per line, with correlation fields bound once
 * per request (or queue message) and inherited by every line after.
 */

export interface LogContext {
  request_id?: string;
  trace_id?: string;
  span_id?: string;
  workspace_id?: string;
  user_id?: string;
  task_id?: string;
  run_id?: string;
  agent_id?: string;
  [field: string]: unknown;
}

export interface LoggerOptions {
  level: LogLevel;
  /** Fraction of debug/info lines kept, decided per trace so a request's lines stay together. */
  sampleRate: number;
  /** Where lines go; console.log by default (workerd forwards it to the log stream). */
  sink?: (line: string) => void;
}

const LEVEL_RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export class Logger {
  readonly context: Readonly<LogContext>;
  private readonly options: LoggerOptions;
  private readonly sampledIn: boolean;

  constructor(options: LoggerOptions, context: LogContext = {}, sampledIn?: boolean) {
    this.options = options;
    this.context = context;
    this.sampledIn = sampledIn ?? isSampledIn(context.trace_id, options.sampleRate);
  }

  /** A logger that adds fields to every line; the sampling decision carries over. */
  child(fields: LogContext): Logger {
    const traceChanged = fields.trace_id !== undefined && fields.trace_id !== this.context.trace_id;
    return new Logger(
      this.options,
      { ...this.context, ...fields },
      traceChanged ? isSampledIn(fields.trace_id, this.options.sampleRate) : this.sampledIn,
    );
  }

  debug(msg: string, fields?: Record<string, unknown>): void {
    this.write("debug", msg, fields);
  }
  info(msg: string, fields?: Record<string, unknown>): void {
    this.write("info", msg, fields);
  }
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.write("warn", msg, fields);
  }
  error(msg: string, fields?: Record<string, unknown>): void {
    this.write("error", msg, fields);
  }

  isEnabled(level: LogLevel): boolean {
    if (LEVEL_RANK[level] < LEVEL_RANK[this.options.level]) return false;
    // Warnings and errors are always kept; sampling only thins the chatter.
    return LEVEL_RANK[level] >= LEVEL_RANK.warn || this.sampledIn;
  }

  private write(level: LogLevel, msg: string, fields?: Record<string, unknown>): void {
    if (!this.isEnabled(level)) return;
    const extra: Record<string, unknown> = {};
    if (fields) {
      for (const [key, value] of Object.entries(fields)) {
        extra[key] = key === "error" || key === "err" ? serializeError(value) : value;
      }
    }
    const line = {
      level,
      msg,
      time: new Date().toISOString(),
      ...this.context,
      ...(redact(extra) as Record<string, unknown>),
    };
    (this.options.sink ?? console.log)(JSON.stringify(line));
  }
}

/** Deterministic per trace: the same trace id is kept or dropped everywhere. */
export function isSampledIn(traceId: string | undefined, sampleRate: number): boolean {
  if (sampleRate >= 1) return true;
  if (sampleRate <= 0) return false;
  if (!traceId || traceId.length < 8) return Math.random() < sampleRate;
  const bucket = Number.parseInt(traceId.slice(-8), 16) / 0x1_0000_0000;
  return bucket < sampleRate;
}
