CREATE TABLE `audit_chains` (
	`workspace_id` text PRIMARY KEY NOT NULL,
	`anchor_seq` integer DEFAULT 0 NOT NULL,
	`anchor_hash` text,
	`head_seq` integer DEFAULT 0 NOT NULL,
	`head_hash` text,
	`archived_count` integer DEFAULT 0 NOT NULL,
	`updated_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL
);
--> statement-breakpoint
PRAGMA foreign_keys=OFF;--> statement-breakpoint
CREATE TABLE `__new_audit_logs` (
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
	`prev_hash` text,
	`hash` text
);
--> statement-breakpoint
INSERT INTO `__new_audit_logs`("id", "workspace_id", "seq", "actor_type", "actor_id", "actor_display", "action", "resource_type", "resource_id", "request_id", "trace_id", "ip", "user_agent", "changes", "metadata", "created_at", "prev_hash", "hash") SELECT "id", "workspace_id", "seq", "actor_type", "actor_id", "actor_display", "action", "resource_type", "resource_id", "request_id", "trace_id", "ip", "user_agent", "changes", "metadata", "created_at", "prev_hash", "hash" FROM `audit_logs`;--> statement-breakpoint
DROP TABLE `audit_logs`;--> statement-breakpoint
ALTER TABLE `__new_audit_logs` RENAME TO `audit_logs`;--> statement-breakpoint
PRAGMA foreign_keys=ON;--> statement-breakpoint
CREATE UNIQUE INDEX `audit_logs_workspace_seq_unique` ON `audit_logs` (`workspace_id`,`seq`);--> statement-breakpoint
CREATE INDEX `audit_logs_workspace_created_seq_idx` ON `audit_logs` (`workspace_id`,`created_at`,`seq`);--> statement-breakpoint
CREATE INDEX `audit_logs_workspace_action_seq_idx` ON `audit_logs` (`workspace_id`,`action`,`seq`);--> statement-breakpoint
CREATE INDEX `audit_logs_workspace_actor_seq_idx` ON `audit_logs` (`workspace_id`,`actor_id`,`seq`);--> statement-breakpoint
CREATE INDEX `audit_logs_workspace_resource_seq_idx` ON `audit_logs` (`workspace_id`,`resource_type`,`resource_id`,`seq`);--> statement-breakpoint
CREATE INDEX `audit_logs_workspace_request_seq_idx` ON `audit_logs` (`workspace_id`,`request_id`,`seq`);--> statement-breakpoint
CREATE INDEX `audit_logs_unsealed_idx` ON `audit_logs` (`workspace_id`,`seq`) WHERE hash IS NULL;