-- Responses of POST /api/v1/llm/responses stored for 30 days (store: true, the default), and where each of their items is, for previous_response_id, item_reference and GET/DELETE of a response.
CREATE TABLE `llm_response_items` (
	`workspace_id` text NOT NULL,
	`item_id` text NOT NULL,
	`response_id` text NOT NULL,
	`source` text NOT NULL,
	`position` integer NOT NULL,
	PRIMARY KEY(`workspace_id`, `item_id`)
);
--> statement-breakpoint
CREATE TABLE `llm_responses` (
	`workspace_id` text NOT NULL,
	`id` text NOT NULL,
	`previous_response_id` text,
	`response` text NOT NULL,
	`input_items` text NOT NULL,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	`expires_at` text NOT NULL,
	PRIMARY KEY(`workspace_id`, `id`)
);
--> statement-breakpoint
CREATE INDEX `llm_responses_expires_idx` ON `llm_responses` (`expires_at`);