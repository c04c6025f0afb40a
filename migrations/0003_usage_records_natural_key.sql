PRAGMA foreign_keys=OFF;--> statement-breakpoint
CREATE TABLE `__new_usage_records` (
	`workspace_id` text NOT NULL,
	`charge_key` text NOT NULL,
	`task_id` text,
	`run_id` text,
	`provider` text NOT NULL,
	`model` text NOT NULL,
	`prompt_tokens` integer NOT NULL,
	`completion_tokens` integer NOT NULL,
	`total_tokens` integer NOT NULL,
	`cost_usd` real NOT NULL,
	`simulated` integer DEFAULT false NOT NULL,
	`day` text NOT NULL,
	`request_id` text,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	PRIMARY KEY(`workspace_id`, `charge_key`)
);
--> statement-breakpoint
INSERT INTO `__new_usage_records`("workspace_id", "charge_key", "task_id", "run_id", "provider", "model", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "simulated", "day", "request_id", "created_at") SELECT "workspace_id", "charge_key", "task_id", "run_id", "provider", "model", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "simulated", "day", "request_id", "created_at" FROM `usage_records`;--> statement-breakpoint
DROP TABLE `usage_records`;--> statement-breakpoint
ALTER TABLE `__new_usage_records` RENAME TO `usage_records`;--> statement-breakpoint
PRAGMA foreign_keys=ON;--> statement-breakpoint
CREATE INDEX `usage_records_workspace_day_idx` ON `usage_records` (`workspace_id`,`day`,`provider`,`model`);--> statement-breakpoint
CREATE INDEX `usage_records_workspace_task_idx` ON `usage_records` (`workspace_id`,`task_id`) WHERE "usage_records"."task_id" IS NOT NULL;