-- Append-only, hash-chained audit log (tally_kit.audit): the kit's migration kit/0001_audit_log, applied by
-- tally_kit.migrations to every database before the service's own. Table names are fixed so the verifier
-- CLI works on any service.
CREATE TABLE audit_log (
    seq         bigserial PRIMARY KEY,
    entity_type text        NOT NULL,
    entity_id   text        NOT NULL,
    action      text        NOT NULL,
    actor       text        NOT NULL,
    tenant_type text,
    tenant_id   text,
    before      jsonb,
    after       jsonb,
    at          timestamptz NOT NULL,
    prev_hash   text        NOT NULL,
    hash        text        NOT NULL UNIQUE
);
CREATE INDEX audit_log_entity ON audit_log (entity_type, entity_id, seq);

-- The chain head: the last entry's seq and hash. Appends lock this row (FOR UPDATE), which
-- serialises them; the verifier also checks that the last entry is the head (a deleted tail
-- is detected).
CREATE TABLE audit_chain_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq       bigint NOT NULL,
    hash      text   NOT NULL
);
INSERT INTO audit_chain_head (singleton, seq, hash) VALUES (true, 0, repeat('0', 64));

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
-- Production: run migrations as an owner role and the service as a role with only
--   GRANT SELECT, INSERT ON audit_log TO <service>; GRANT SELECT, UPDATE ON audit_chain_head TO <service>;
--   GRANT USAGE ON SEQUENCE audit_log_seq_seq TO <service>;
-- so the service cannot disable the trigger either (only a table owner can).
