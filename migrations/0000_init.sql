CREATE TABLE `api_keys` (
	`id` text PRIMARY KEY NOT NULL,
	`workspace_id` text NOT NULL,
	`name` text NOT NULL,
	`key_hash` text NOT NULL,
	`display_prefix` text NOT NULL,
	`scopes` text NOT NULL,
	`created_by` text,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	`last_used_at` text,
	`expires_at` text,
	`revoked_at` text,
	FOREIGN KEY (`workspace_id`) REFERENCES `workspaces`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE UNIQUE INDEX `api_keys_key_hash_unique` ON `api_keys` (`key_hash`);--> statement-breakpoint
CREATE INDEX `api_keys_workspace_created_idx` ON `api_keys` (`workspace_id`,`created_at`);--> statement-breakpoint
CREATE TABLE `artifacts` (
	`id` text PRIMARY KEY NOT NULL,
	`workspace_id` text NOT NULL,
	`task_id` text NOT NULL,
	`run_id` text,
	`path` text NOT NULL,
	`r2_key` text NOT NULL,
	`size_bytes` integer NOT NULL,
	`mime_type` text NOT NULL,
	`sha256` text NOT NULL,
	`version` integer DEFAULT 1 NOT NULL,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	`updated_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	FOREIGN KEY (`task_id`) REFERENCES `tasks`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE UNIQUE INDEX `artifacts_task_path_unique` ON `artifacts` (`task_id`,`path`);--> statement-breakpoint
CREATE INDEX `artifacts_workspace_task_idx` ON `artifacts` (`workspace_id`,`task_id`,`created_at`);--> statement-breakpoint
CREATE TABLE `audit_logs` (
	`id` text PRIMARY KEY NOT NULL,
	`workspace_id` text NOT NULL,
	`seq` integer NOT NULL,
	`actor_type` text NOT NULL,
	`actor_id` text NOT NULL,
	`actor_display` text,
	`action` text NOT NULL,
	`resource_type` text NOT NULL,
	`resource_id` text,
	`request_id` text,
	`trace_id` text,
	`ip` text,
	`user_agent` text,
	`changes` text,
	`metadata` text,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	`prev_hash` text NOT NULL,
	`hash` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `audit_logs_workspace_seq_unique` ON `audit_logs` (`workspace_id`,`seq`);--> statement-breakpoint
CREATE INDEX `audit_logs_workspace_created_idx` ON `audit_logs` (`workspace_id`,`created_at`);--> statement-breakpoint
CREATE INDEX `audit_logs_workspace_action_created_idx` ON `audit_logs` (`workspace_id`,`action`,`created_at`);--> statement-breakpoint
CREATE INDEX `audit_logs_workspace_actor_created_idx` ON `audit_logs` (`workspace_id`,`actor_id`,`created_at`);--> statement-breakpoint
CREATE INDEX `audit_logs_workspace_resource_idx` ON `audit_logs` (`workspace_id`,`resource_type`,`resource_id`);--> statement-breakpoint
CREATE INDEX `audit_logs_workspace_request_idx` ON `audit_logs` (`workspace_id`,`request_id`);--> statement-breakpoint
CREATE TABLE `dead_letters` (
	`id` text PRIMARY KEY NOT NULL,
	`workspace_id` text NOT NULL,
	`task_id` text NOT NULL,
	`message_id` text NOT NULL,
	`queue` text NOT NULL,
	`attempts` integer NOT NULL,
	`error_type` text,
	`error_message` text,
	`payload` text NOT NULL,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	`replayed_at` text,
	`replay_count` integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `dead_letters_message_unique` ON `dead_letters` (`message_id`);--> statement-breakpoint
CREATE INDEX `dead_letters_workspace_created_idx` ON `dead_letters` (`workspace_id`,`created_at`);--> statement-breakpoint
CREATE INDEX `dead_letters_workspace_task_idx` ON `dead_letters` (`workspace_id`,`task_id`);--> statement-breakpoint
CREATE TABLE `task_runs` (
	`id` text PRIMARY KEY NOT NULL,
	`workspace_id` text NOT NULL,
	`task_id` text NOT NULL,
	`attempt` integer NOT NULL,
	`message_id` text NOT NULL,
	`status` text DEFAULT 'running' NOT NULL,
	`agent_id` text,
	`provider` text,
	`model` text,
	`prompt_tokens` integer DEFAULT 0 NOT NULL,
	`completion_tokens` integer DEFAULT 0 NOT NULL,
	`cost_usd` real DEFAULT 0 NOT NULL,
	`error` text,
	`started_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	`finished_at` text,
	FOREIGN KEY (`task_id`) REFERENCES `tasks`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE UNIQUE INDEX `task_runs_task_attempt_unique` ON `task_runs` (`task_id`,`attempt`);--> statement-breakpoint
CREATE INDEX `task_runs_message_idx` ON `task_runs` (`message_id`);--> statement-breakpoint
CREATE INDEX `task_runs_workspace_started_idx` ON `task_runs` (`workspace_id`,`started_at`);--> statement-breakpoint
CREATE TABLE `tasks` (
	`id` text PRIMARY KEY NOT NULL,
	`workspace_id` text NOT NULL,
	`title` text NOT NULL,
	`description` text,
	`type` text NOT NULL,
	`priority` text DEFAULT 'medium' NOT NULL,
	`status` text DEFAULT 'pending' NOT NULL,
	`project_id` text,
	`agent_config` text,
	`estimated_tokens` integer,
	`idempotency_key` text,
	`request_hash` text,
	`max_retries` integer DEFAULT 3 NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`created_by` text,
	`prompt_tokens` integer DEFAULT 0 NOT NULL,
	`completion_tokens` integer DEFAULT 0 NOT NULL,
	`cost_usd` real DEFAULT 0 NOT NULL,
	`result` text,
	`error` text,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	`updated_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	`queued_at` text,
	`started_at` text,
	`finished_at` text,
	`cancel_requested_at` text,
	FOREIGN KEY (`workspace_id`) REFERENCES `workspaces`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `tasks_workspace_created_idx` ON `tasks` (`workspace_id`,`created_at`);--> statement-breakpoint
CREATE INDEX `tasks_workspace_status_created_idx` ON `tasks` (`workspace_id`,`status`,`created_at`);--> statement-breakpoint
CREATE INDEX `tasks_workspace_type_created_idx` ON `tasks` (`workspace_id`,`type`,`created_at`);--> statement-breakpoint
CREATE INDEX `tasks_workspace_priority_created_idx` ON `tasks` (`workspace_id`,`priority`,`created_at`);--> statement-breakpoint
CREATE UNIQUE INDEX `tasks_workspace_idempotency_unique` ON `tasks` (`workspace_id`,`idempotency_key`);--> statement-breakpoint
CREATE TABLE `usage_records` (
	`id` text PRIMARY KEY NOT NULL,
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
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `usage_records_workspace_charge_unique` ON `usage_records` (`workspace_id`,`charge_key`);--> statement-breakpoint
CREATE INDEX `usage_records_workspace_day_idx` ON `usage_records` (`workspace_id`,`day`,`provider`,`model`);--> statement-breakpoint
CREATE INDEX `usage_records_workspace_task_idx` ON `usage_records` (`workspace_id`,`task_id`);--> statement-breakpoint
CREATE TABLE `workspaces` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`plan` text DEFAULT 'free' NOT NULL,
	`limits` text NOT NULL,
	`budgets` text,
	`llm` text,
	`audit_retention_days` integer DEFAULT 365 NOT NULL,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	`updated_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL
);
