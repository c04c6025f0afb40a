-- Attempts that timed out at a provider (each charged its prompt) are counted apart from calls from here on; days summed before kept them in `calls` and `estimated_calls`.
ALTER TABLE `usage_daily` ADD `timed_out_attempts` integer DEFAULT 0 NOT NULL;
