import type { ToolDefinition } from "../../llm/types.ts";
import { ArtifactError, type TaskFiles } from "../artifacts.ts";
import type { EventChain } from "../events.ts";

/** The agent's tools over the task's files. Errors become tool results the model can read, never crashes. */

/** How much of a file read_file hands back to the model. */
const READ_MAX_CHARS = 64 * 1024;

export const TOOL_DEFINITIONS: ToolDefinition[] = [
  {
    type: "function",
    function: {
      name: "list_files",
      description: "List the task's files with their sizes and MIME types.",
      parameters: { type: "object", properties: {}, additionalProperties: false },
    },
  },
  {
    type: "function",
    function: {
      name: "read_file",
      description: `Read one of the task's files (up to ${READ_MAX_CHARS} characters).`,
      parameters: {
        type: "object",
        properties: { path: { type: "string", description: "Relative path, e.g. src/index.ts" } },
        required: ["path"],
        additionalProperties: false,
      },
    },
  },
  {
    type: "function",
    function: {
      name: "write_file",
      description: "Create or replace a file in the task's file space.",
      parameters: {
        type: "object",
        properties: {
          path: { type: "string", description: "Relative path; no .., no leading /" },
          content: { type: "string" },
          mime_type: { type: "string", description: "Optional; guessed from the extension." },
        },
        required: ["path", "content"],
        additionalProperties: false,
      },
    },
  },
  {
    type: "function",
    function: {
      name: "finish",
      description: "End the task with a summary of what was done.",
      parameters: {
        type: "object",
        properties: {
          summary: { type: "string" },
          status: { type: "string", enum: ["success", "partial_success"] },
        },
        required: ["summary"],
        additionalProperties: false,
      },
    },
  },
];

export type ToolOutcome =
  | {
      status: "success";
      result: Record<string, unknown>;
      finish?: { summary: string; status: "success" | "partial_success" };
    }
  | { status: "error"; error: string; code: number };

export interface ToolEnv {
  files: TaskFiles;
  events: EventChain;
  workspaceId: string;
  taskId: string;
  runId: string;
  agentId: string;
}

/**
 * `finish` as its schema asks: a summary (a list of lines is taken as those lines) and a status of the two. Anything
 * else is a tool error the model can mend: taken as it came, a summary of bullet points was lost ("(no summary)")
 * and an unknown status became success.
 */
function finishOutcome(args: Record<string, unknown>): ToolOutcome {
  const lines = Array.isArray(args.summary) && args.summary.every((line) => typeof line === "string");
  const summary = args.summary === undefined ? "" : lines ? (args.summary as string[]).join("\n") : args.summary;
  if (typeof summary !== "string") return { status: "error", error: "summary must be a string", code: 400 };
  if (args.status !== undefined && args.status !== "success" && args.status !== "partial_success")
    return { status: "error", error: 'status must be "success" or "partial_success"', code: 400 };
  const status = args.status === "partial_success" ? "partial_success" : "success";
  return { status: "success", result: { finished: true }, finish: { summary, status } };
}

export async function runTool(name: string, rawArguments: string, env: ToolEnv): Promise<ToolOutcome> {
  let parsed: unknown;
  try {
    parsed = rawArguments.trim() === "" ? {} : JSON.parse(rawArguments);
  } catch (error) {
    // Where it broke tells the model what to fix; at the very end, its answer was cut off (max_tokens).
    const why = error instanceof SyntaxError ? ` (${error.message.slice(0, 200)})` : "";
    return { status: "error", error: `arguments are not valid JSON${why}: send a JSON object`, code: 400 };
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    return { status: "error", error: "arguments must be a JSON object", code: 400 };
  const args = parsed as Record<string, unknown>;
  try {
    switch (name) {
      case "list_files":
        return { status: "success", result: { files: env.files.list() } };
      case "read_file":
        return { status: "success", result: await env.files.read(args.path, READ_MAX_CHARS) };
      case "write_file":
        return { status: "success", result: await writeFile(args, env) };
      case "finish":
        return finishOutcome(args);
      default:
        return { status: "error", error: `unknown tool ${name}`, code: 404 };
    }
  } catch (error) {
    if (error instanceof ArtifactError) return { status: "error", error: error.message, code: error.status };
    throw error;
  }
}

/** Writes through TaskFiles and announces the artifact. */
export async function writeFile(args: Record<string, unknown>, env: ToolEnv): Promise<Record<string, unknown>> {
  const { row, created } = await env.files.write(args.path, args.content, args.mime_type);
  if (created) {
    env.events.emit({
      event_type: "artifact.created",
      workspace_id: env.workspaceId,
      task_id: env.taskId,
      run_id: env.runId,
      agent_id: env.agentId,
      data: {
        artifact_id: row.id,
        artifact_type: "file",
        task_id: env.taskId,
        path: row.path,
        size_bytes: row.sizeBytes,
        mime_type: row.mimeType,
        metadata: { sha256: row.sha256, version: row.version },
      },
    });
  } else {
    env.events.emit({
      event_type: "artifact.updated",
      workspace_id: env.workspaceId,
      task_id: env.taskId,
      run_id: env.runId,
      agent_id: env.agentId,
      data: {
        artifact_id: row.id,
        task_id: env.taskId,
        changes: { path: row.path, size_bytes: row.sizeBytes, status: "completed" },
        sha256: row.sha256,
        version: row.version,
      },
    });
  }
  return { artifact_id: row.id, path: row.path, size_bytes: row.sizeBytes, sha256: row.sha256, version: row.version };
}
