-- Uploads are compiled after the request answers: a version is `compiling`, then `ready` (it
-- runs) or `failed` (with the reason). Versions stored before this migration were compiled in
-- their upload request, so they are ready.
ALTER TABLE plugin_versions ADD COLUMN status TEXT NOT NULL DEFAULT 'ready';
ALTER TABLE plugin_versions ADD COLUMN failure TEXT;

-- The compiler's queue, oldest upload first; small, since versions leave it once compiled.
CREATE INDEX plugin_versions_compiling ON plugin_versions(created_at) WHERE status = 'compiling';
