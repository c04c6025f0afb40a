import { zodFunction, zodResponseFormat } from "openai/helpers/zod";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { sdkAgainstApp, workspaceWith } from "../support/llm.ts";

/**
 * The simulated provider's JSON answers and tool arguments are values their schema takes, so a program that
 * parses them (the openai SDK's parse() and stream() with zodResponseFormat, runTools() with zodFunction) runs
 * offline, under `npm run dev`, as it does against a provider: bounds, lengths, formats and references included.
 */

const onSimulated = () => workspaceWith({ strategy: "fallback", chain: [{ provider: "simulated", model: "sim-1" }] });

/** What structured-output callers commonly ask for: bounded numbers, non-empty lists, short and formatted strings. */
const Ticket = z.object({
  title: z.string().min(30).max(60),
  code: z.string().max(8),
  priority: z.number().int().positive(),
  score: z.number().gt(0.5).lt(1),
  debt: z.number().negative(),
  steps: z.array(z.string()).min(2),
  email: z.email(),
  url: z.url(),
  id: z.uuid(),
  due: z.iso.datetime(),
  day: z.iso.date(),
});

interface Node {
  name: string;
  children: Node[];
}
const Tree: z.ZodType<Node> = z.object({ name: z.string(), children: z.array(z.lazy(() => Tree)) });
const Org = z.object({ root: Tree });

describe("the simulated provider's answers to a schema", () => {
  it("parse() and stream() answer a parsed object for a schema with bounds, lengths and formats", async () => {
    const workspace = await onSimulated();
    const client = sdkAgainstApp(workspace.key);
    const request = {
      model: "auto",
      messages: [{ role: "user" as const, content: "File a ticket." }],
      response_format: zodResponseFormat(Ticket, "ticket"),
    };
    const parsed = (await client.chat.completions.parse(request)).choices[0].message.parsed;
    expect(Ticket.parse(parsed)).toEqual(parsed);
    const streamed = await client.chat.completions.stream(request).finalChatCompletion();
    expect(streamed.choices[0].message.parsed).toEqual(parsed);
  });

  it("parse() answers a parsed object for a recursive schema (a $ref)", async () => {
    const workspace = await onSimulated();
    const completion = await sdkAgainstApp(workspace.key).chat.completions.parse({
      model: "auto",
      messages: [{ role: "user", content: "Draw the org chart." }],
      response_format: zodResponseFormat(Org, "org"),
    });
    const parsed = completion.choices[0].message.parsed;
    expect(parsed).toEqual({ root: { name: expect.any(String), children: [] } });
  });

  it("runTools() runs a zodFunction whose arguments have bounds and formats", async () => {
    const workspace = await onSimulated();
    const seen: unknown[] = [];
    const fileTicket = zodFunction({
      name: "file_ticket",
      parameters: Ticket,
      function: (args: unknown) => {
        seen.push(args);
        return "filed";
      },
    });
    const runner = sdkAgainstApp(workspace.key).chat.completions.runTools({
      model: "auto",
      messages: [{ role: "user", content: "File a ticket." }],
      tools: [fileTicket],
    });
    expect(await runner.finalContent()).toMatch(/^\[simulated\]/);
    expect(seen).toHaveLength(1);
    expect(Ticket.parse(seen[0])).toEqual(seen[0]);
  });
});
