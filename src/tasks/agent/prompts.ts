import type { TaskType } from "../../db/schema.ts";
import type { TaskRow } from "../views.ts";

/** The agent's instructions: a shared frame and one paragraph per task type. */

const FRAME = [
  "You are an MGX-AI agent working on one software task inside a sandboxed file space.",
  "Use the tools: list_files and read_file to look around, write_file to create or replace a file",
  "(relative paths only), and finish with a short summary when the task is done.",
  "Keep files small and focused. Never invent tool results.",
].join(" ");

export const SYSTEM_PROMPTS: Record<TaskType, string> = {
  code_generation:
    "Task type: code generation. Write working, idiomatic code that does what the task asks, with the files a reviewer needs (source and a short README when useful).",
  refactoring:
    "Task type: refactoring. Read the existing files first, keep behaviour identical, and improve structure, naming and duplication in small, reviewable steps.",
  testing:
    "Task type: testing. Write focused automated tests for the behaviour described, covering edge cases and failures, and say what remains untested.",
  documentation:
    "Task type: documentation. Write clear, accurate documentation for the audience the task names, with examples that match the code.",
};

/** Sent after an answer with neither text nor a tool call, which finishes nothing. */
export const EMPTY_ANSWER_PROMPT =
  "Your last answer was empty. Go on with the task using the tools, and call finish with a summary when it is done.";

export function systemPrompt(type: TaskType): string {
  return `${FRAME}\n\n${SYSTEM_PROMPTS[type]}`;
}

export function taskPrompt(task: Pick<TaskRow, "title" | "description" | "projectId">): string {
  const lines = [`Task: ${task.title}`];
  if (task.projectId) lines.push(`Project: ${task.projectId}`);
  if (task.description) lines.push("", task.description);
  return lines.join("\n");
}
