import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { handleQueueBatch } from "../../src/queues/consumer.ts";

/** A batch from a queue this Worker has no consumer for is given back to the queue, never acknowledged. */

describe("a queue batch for an unknown queue name", () => {
  it("is retried as a whole, no message acknowledged", async () => {
    const batch = createMessageBatch("billing-events", [
      { id: "msg-a", timestamp: new Date(), attempts: 1, body: { kind: "invoice" } },
      { id: "msg-b", timestamp: new Date(), attempts: 1, body: { kind: "refund" } },
    ]);
    const ctx = createExecutionContext();

    await handleQueueBatch(batch, env, ctx);

    const result = await getQueueResult(batch, ctx);
    expect(result).toMatchObject({ ackAll: false, explicitAcks: [], retryMessages: [], retryBatch: { retry: true } });
  });
});
