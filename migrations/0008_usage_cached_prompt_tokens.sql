ALTER TABLE `usage_daily` ADD `cached_prompt_tokens` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `usage_records` ADD `cached_prompt_tokens` integer DEFAULT 0 NOT NULL;