-- The least severe log level a plugin's lines are kept at (trace < debug < info < warn < error).
ALTER TABLE plugins ADD COLUMN log_level TEXT NOT NULL DEFAULT 'info';
