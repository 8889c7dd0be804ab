-- Idempotency-Key records (tally_kit.idempotency): the kit's migration kit/0002_idempotency, applied by
-- tally_kit.migrations to every database before the service's own.
CREATE TABLE idempotency_keys (
    principal    text        NOT NULL,
    key          text        NOT NULL,
    method       text        NOT NULL,
    path         text        NOT NULL,
    request_hash text        NOT NULL,
    status       integer,                 -- NULL while the first request is in flight
    response     jsonb,                   -- {"headers": {...}, "body": "<text>"}
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    PRIMARY KEY (principal, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
