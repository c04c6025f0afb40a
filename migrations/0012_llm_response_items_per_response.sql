-- An item id is indexed once per response that carries it, not only for the first: a reference to it still resolves after that first response is deleted or expires, while a later one still holds the item.
PRAGMA foreign_keys=OFF;--> statement-breakpoint
CREATE TABLE `__new_llm_response_items` (
	`workspace_id` text NOT NULL,
	`item_id` text NOT NULL,
	`response_id` text NOT NULL,
	`source` text NOT NULL,
	`position` integer NOT NULL,
	PRIMARY KEY(`workspace_id`, `item_id`, `response_id`)
);
--> statement-breakpoint
INSERT INTO `__new_llm_response_items`("workspace_id", "item_id", "response_id", "source", "position") SELECT "workspace_id", "item_id", "response_id", "source", "position" FROM `llm_response_items`;--> statement-breakpoint
DROP TABLE `llm_response_items`;--> statement-breakpoint
ALTER TABLE `__new_llm_response_items` RENAME TO `llm_response_items`;--> statement-breakpoint
PRAGMA foreign_keys=ON;