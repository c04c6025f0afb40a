-- Attempts whose answer broke after it began (each charged its prompt and what the provider wrote) are counted apart from calls from here on; days summed before charged them nothing.
ALTER TABLE `usage_daily` ADD `interrupted_attempts` integer DEFAULT 0 NOT NULL;
