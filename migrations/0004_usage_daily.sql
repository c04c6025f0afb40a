CREATE TABLE `usage_daily` (
	`workspace_id` text NOT NULL,
	`day` text NOT NULL,
	`provider` text NOT NULL,
	`model` text NOT NULL,
	`simulated` integer NOT NULL,
	`calls` integer NOT NULL,
	`prompt_tokens` integer NOT NULL,
	`completion_tokens` integer NOT NULL,
	`total_tokens` integer NOT NULL,
	`cost_usd` real NOT NULL,
	PRIMARY KEY(`workspace_id`, `day`, `provider`, `model`, `simulated`)
);
--> statement-breakpoint
-- The sums of the rows written so far; from here on each batch of usage rows adds its own.
INSERT INTO `usage_daily` (`workspace_id`, `day`, `provider`, `model`, `simulated`, `calls`, `prompt_tokens`, `completion_tokens`, `total_tokens`, `cost_usd`)
SELECT `workspace_id`, `day`, `provider`, `model`, `simulated`, count(*), sum(`prompt_tokens`), sum(`completion_tokens`), sum(`total_tokens`), sum(`cost_usd`)
FROM `usage_records` GROUP BY `workspace_id`, `day`, `provider`, `model`, `simulated`;--> statement-breakpoint
DROP INDEX `usage_records_workspace_day_idx`;