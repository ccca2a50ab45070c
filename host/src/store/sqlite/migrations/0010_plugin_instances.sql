-- How a plugin's instances are used: `per_event` (a fresh instance per event) or `reuse`.
ALTER TABLE plugins ADD COLUMN instances TEXT NOT NULL DEFAULT 'per_event';
