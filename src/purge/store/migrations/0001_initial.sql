-- cdnsign purge store, schema version 1 (applied by src/purge/store/pg_schema.rs).
CREATE TABLE purges (
    id TEXT PRIMARY KEY,
    seq BIGSERIAL NOT NULL UNIQUE,
    client TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    target TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT,
    header JSONB NOT NULL
);
CREATE INDEX purges_by_target ON purges (target, seq DESC);
CREATE INDEX purges_finished ON purges (finished_at_ms) WHERE finished_at_ms IS NOT NULL;
CREATE TABLE purge_keys (
    client TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    purge_id TEXT NOT NULL REFERENCES purges (id) ON DELETE CASCADE,
    PRIMARY KEY (client, idempotency_key)
);
CREATE INDEX purge_keys_by_purge ON purge_keys (purge_id);
CREATE TABLE purge_jobs (
    purge_id TEXT NOT NULL REFERENCES purges (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    purge_seq BIGINT NOT NULL,
    provider TEXT NOT NULL,
    resource TEXT NOT NULL,
    state TEXT NOT NULL,
    job JSONB NOT NULL,
    PRIMARY KEY (purge_id, idx)
);
CREATE INDEX purge_jobs_open ON purge_jobs (provider, resource, purge_seq, idx)
    WHERE state NOT IN ('completed', 'failed');
CREATE TABLE purge_queues (
    provider TEXT NOT NULL,
    resource TEXT NOT NULL,
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_epoch BIGINT NOT NULL DEFAULT 0,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, resource)
);
CREATE TABLE purge_rate (
    client TEXT NOT NULL,
    bucket TEXT NOT NULL,
    tokens DOUBLE PRECISION NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (client, bucket)
);
