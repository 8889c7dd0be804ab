-- Contracts: a contract is a chain of versions; its status is derived from them and the clock.
CREATE TABLE contracts (
    id                      text PRIMARY KEY,
    name                    text        NOT NULL,
    contract_type           text        NOT NULL CHECK (contract_type IN ('cpm', 'cpa')),
    advertiser_id           text        NOT NULL,
    partner_ids             text[]      NOT NULL DEFAULT '{}',
    currency                text        NOT NULL,
    time_zone               text        NOT NULL,
    created_by              text        NOT NULL,
    created_at              timestamptz NOT NULL,
    -- every lifecycle event increments it; orders the contract's events and contracts.terms records
    revision                bigint      NOT NULL DEFAULT 0,
    -- derived status as of the last lifecycle step or scheduler tick (a cache for list filters;
    -- the API derives the live status from the versions and the clock)
    status                  text        NOT NULL DEFAULT 'draft',
    -- version in force as of the last step/tick (NULL: none yet); lets the scheduler announce activations
    current_version         integer,
    -- an approved termination: the contract ends at this instant (exclusive)
    terminated_at           timestamptz,
    -- cancellation of the auto-renewal of the term ending at auto_renew_cancelled_for
    auto_renew_cancelled_for timestamptz,
    auto_renew_cancelled_by text,
    auto_renew_cancelled_at timestamptz
);
CREATE INDEX contracts_listing ON contracts (created_at, id);
CREATE INDEX contracts_advertiser ON contracts (advertiser_id, created_at, id);
CREATE INDEX contracts_partners ON contracts USING gin (partner_ids);
CREATE INDEX contracts_status ON contracts (status);

CREATE TABLE contract_versions (
    contract_id       text        NOT NULL REFERENCES contracts (id),
    version           integer     NOT NULL CHECK (version > 0),
    kind              text        NOT NULL CHECK (kind IN ('initial', 'amendment', 'renewal', 'termination')),
    state             text        NOT NULL CHECK (state IN ('draft', 'submitted', 'approved', 'rejected', 'withdrawn')),
    terms             jsonb       NOT NULL,
    -- first instant these terms govern (inclusive, UTC)
    effective_from    timestamptz NOT NULL,
    -- end of the term: flight end 23:59:59.999999 local + 1 µs (exclusive); NULL = evergreen
    ends_at           timestamptz,
    backdated         boolean     NOT NULL DEFAULT false,
    committed_value   numeric,
    -- bumps with every change of this row: the ETag is "<contract>.<version>.<row_revision>"
    row_revision      integer     NOT NULL DEFAULT 1,
    -- increments at every submit: approvals belong to one submission and never carry over
    submission        integer     NOT NULL DEFAULT 0,
    required_approvals jsonb,
    authors           text[]      NOT NULL,
    submitted_by      text,
    submitted_at      timestamptz,
    decided_at        timestamptz,
    decided_by        text,
    decision_comment  text,
    comment           text,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    PRIMARY KEY (contract_id, version)
);
-- at most one open (draft or submitted) version per contract
CREATE UNIQUE INDEX contract_versions_one_open ON contract_versions (contract_id)
    WHERE state IN ('draft', 'submitted');

-- approved versions are immutable: history is never rewritten
CREATE FUNCTION contract_versions_freeze() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state IN ('approved', 'rejected') THEN
        RAISE EXCEPTION 'contract % version % is %, and immutable', OLD.contract_id, OLD.version, OLD.state
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE TRIGGER contract_versions_frozen BEFORE UPDATE OR DELETE ON contract_versions
    FOR EACH ROW EXECUTE FUNCTION contract_versions_freeze();

CREATE TABLE approvals (
    contract_id text        NOT NULL,
    version     integer     NOT NULL,
    submission  integer     NOT NULL,
    approver    text        NOT NULL,
    role        text        NOT NULL,
    comment     text,
    at          timestamptz NOT NULL,
    PRIMARY KEY (contract_id, version, submission, approver),
    FOREIGN KEY (contract_id, version) REFERENCES contract_versions (contract_id, version)
);

-- Transactional outbox: rows are written in the lifecycle step's transaction; the relay
-- publishes them in id order and marks them published. value is the Avro-encoded record.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid        NOT NULL,
    topic        text        NOT NULL CHECK (topic IN ('events', 'terms')),
    contract_id  text        NOT NULL,
    value        bytea       NOT NULL,
    created_at   timestamptz NOT NULL,
    published_at timestamptz,
    UNIQUE (event_id, topic)
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
