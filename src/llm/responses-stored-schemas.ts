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

export const ResponseInputItemsQuerySchema = z.object({
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
