-- Issue 10: the sync log is per tenant. Each row names the tenant of the
-- credential the connection presented; NULL when authentication was off,
-- and in rows exported before this migration (a re-export fills them in:
-- `ventas export` upserts every record the store still holds).
ALTER TABLE sync_sessions ADD COLUMN tenant text;
CREATE INDEX sync_sessions_tenant ON sync_sessions (tenant, connected_at);
