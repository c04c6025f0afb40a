CREATE TABLE `parked_events` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`event_id` text NOT NULL,
	`workspace_id` text NOT NULL,
	`event` text NOT NULL,
	`parked_at` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`last_error` text
);
--> statement-breakpoint
CREATE UNIQUE INDEX `parked_events_event_id_idx` ON `parked_events` (`event_id`);