import { z } from "@hono/zod-openapi";
import { MAX_ITEM_ID_LENGTH } from "./responses-schemas.ts";

/**
 * The wire format of a stored response's routes (GET and DELETE of /api/v1/llm/responses/{id}, its
 * input_items), as OpenAI's: the response object itself is src/llm/responses-schemas.ts's.
 */

export const ResponseIdParamSchema = z.object({
  id: z
    .string()
    .min(1)
    .max(256)
    .openapi({ param: { name: "id", in: "path" }, example: "resp_01JD3Y8T1V8R9ZJ6M0Q5H1N2K3" }),
});

export const ResponseDeletedSchema = z
  .object({ id: z.string(), object: z.literal("response"), deleted: z.literal(true) })
  .openapi("ResponseDeleted");

/** OpenAI's `include` as its SDK sends it in a query (`include[]=…`, repeated): accepted and ignored, as in a body. */
const IncludeParam = z
  .union([z.string(), z.array(z.string())])
  .optional()
  .openapi({
    description:
      "Accepted and ignored (the openai SDK sends `include` as `include[]`): no reasoning items, log probabilities or hosted tools' results are kept to return.",
  });
const INCLUDE_PARAMS = { include: IncludeParam, "include[]": IncludeParam };

/**
 * GET /api/v1/llm/responses/{id}'s parameters, as the openai SDK's `responses.retrieve()` may send them: `include`,
 * and `stream`, which asks for the stored response as a stream of events, not offered here.
 */
export const ResponseRetrieveQuerySchema = z.object({
  ...INCLUDE_PARAMS,
  stream: z
    .literal("false", {
      error: "streaming a stored response is not offered: it is answered whole as JSON (leave stream out, or false)",
    })
    .optional()
    .openapi({ description: "Only `false`: a stored response is answered whole, not as a stream of events." }),
});

export const ResponseInputItemsQuerySchema = z.object({
  ...INCLUDE_PARAMS,
  limit: z.coerce.number().int().min(1).max(100).default(20).openapi({ description: "Items per page, 1..100." }),
  after: z
    .string()
    .min(1)
    .max(MAX_ITEM_ID_LENGTH)
    .optional()
    .openapi({ description: "The item id to list after (in `order`)." }),
  order: z
    .enum(["asc", "desc"])
    .default("desc")
    .openapi({ description: "`desc` (the default, as OpenAI's) lists the last input item first." }),
});

export const ResponseInputItemListSchema = z
  .object({
    object: z.literal("list"),
    data: z.array(
      z
        .object({ id: z.string(), type: z.string() })
        .loose()
        .openapi({ description: "An input item as it was sent (item references resolved), with its id." }),
    ),
    first_id: z.string().nullable(),
    last_id: z.string().nullable(),
    has_more: z.boolean(),
  })
  .openapi("ResponseInputItemList", {
    description:
      "A stored response's own input items (not its conversation's earlier ones), as OpenAI lists them: `after` the last id of a page while `has_more`.",
  });
