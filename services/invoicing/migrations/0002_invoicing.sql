-- Invoicing: consumed records (natural keys), invoices, payout statements, credit notes,
-- gap-free number series and the double-entry ledger. Money columns are numeric(38,12):
-- exact amounts keep full precision, rounded amounts have the currency's minor unit.

-- ------------------------------------------------------------------ consumed records
-- One row per billing.periods_closed record ever applied; close_id is the natural key, so a
-- replayed record is recognised and skipped. record keeps the whole decoded value (lineage).
CREATE TABLE period_closes (
    close_id          text PRIMARY KEY,
    contract_id       text        NOT NULL,
    advertiser_id     text        NOT NULL,
    contract_type     text        NOT NULL,
    currency          text        NOT NULL,
    time_zone         text        NOT NULL,
    period_kind       text        NOT NULL,
    period_key        text        NOT NULL,
    period_start      timestamptz NOT NULL,
    period_end        timestamptz NOT NULL,
    closed_at         timestamptz NOT NULL,
    content_hash      text        NOT NULL,
    record            jsonb       NOT NULL,
    source_offsets    jsonb       NOT NULL,
    kafka_topic       text        NOT NULL,
    kafka_partition   integer     NOT NULL,
    kafka_offset      bigint      NOT NULL,
    applied_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX period_closes_contract ON period_closes (contract_id, period_key);

CREATE TABLE adjustments (
    adjustment_id     text PRIMARY KEY,
    kind              text        NOT NULL,
    contract_id       text        NOT NULL,
    advertiser_id     text        NOT NULL,
    partner_id        text,
    currency          text        NOT NULL,
    corrects_period_key   text    NOT NULL,
    applies_to_period_key text    NOT NULL,
    amount_exact      numeric(38, 12) NOT NULL,
    partner_payout_exact numeric(38, 12),
    content_hash      text        NOT NULL,
    record            jsonb       NOT NULL,
    invoice_line_id   uuid,
    statement_line_id uuid,
    kafka_topic       text        NOT NULL,
    kafka_partition   integer     NOT NULL,
    kafka_offset      bigint      NOT NULL,
    applied_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX adjustments_invoice_line ON adjustments (invoice_line_id);
CREATE INDEX adjustments_statement_line ON adjustments (statement_line_id);

-- Records that could not be applied (undecodable, or inconsistent content): kept with the
-- reason, never silently dropped; the offset is committed so the stream is not blocked.
CREATE TABLE rejected_records (
    kafka_topic     text    NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint  NOT NULL,
    natural_key     text,
    error_kind      text    NOT NULL,
    reason          text    NOT NULL,
    raw             bytea,
    rejected_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);

-- ------------------------------------------------------------------ number series
-- One row per (series, year); finalizing increments it with the row locked until commit, so
-- numbers are gap-free (a rolled-back finalization rolls back its increment too).
CREATE TABLE number_series (
    series      text    NOT NULL,
    year        integer NOT NULL,
    last_value  integer NOT NULL CHECK (last_value >= 0),
    PRIMARY KEY (series, year)
);

-- ------------------------------------------------------------------ invoices
CREATE TABLE invoices (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    advertiser_id      text        NOT NULL,
    currency           text        NOT NULL,
    period_key         text        NOT NULL,
    period_start       timestamptz,
    period_end         timestamptz,
    status             text        NOT NULL DEFAULT 'draft'
                       CHECK (status IN ('draft', 'finalized', 'sent', 'paid', 'void')),
    total              numeric(38, 12) NOT NULL DEFAULT 0,
    payment_terms_days integer,
    po_references      text[]      NOT NULL DEFAULT '{}',
    number             text UNIQUE,
    number_year        integer,
    number_seq         integer,
    issue_date         date,
    due_date           date,
    prepared_by        text,
    prepared_at        timestamptz,
    finalized_by       text,
    approved_by        text,
    finalized_at       timestamptz,
    sent_by            text,
    sent_at            timestamptz,
    paid_by            text,
    paid_at            timestamptz,
    payment_reference  text,
    voided_by          text,
    voided_at          timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (number_year, number_seq),
    CHECK ((status = 'draft') = (number IS NULL))
);
-- One open draft per advertiser, currency and period; lines arriving after finalization
-- start a supplementary draft for the same period.
CREATE UNIQUE INDEX invoices_one_draft ON invoices (advertiser_id, currency, period_key) WHERE status = 'draft';
CREATE INDEX invoices_advertiser ON invoices (advertiser_id, created_at, id);

CREATE TABLE invoice_lines (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    line_no             bigserial   NOT NULL,
    invoice_id          uuid        NOT NULL REFERENCES invoices (id),
    contract_id         text,
    kind                text        NOT NULL CHECK (kind IN (
                            'cpm_impressions', 'cpm_over_delivery', 'minimum_commitment_shortfall',
                            'cpa_conversions', 'adjustment')),
    adjustment_kind     text CHECK (adjustment_kind IN (
                            'late_event', 'reversal_after_close', 'ivt_credit', 'backdated_amendment', 'manual_credit')),
    description         text        NOT NULL,
    contract_version    integer,
    price_point         text,
    event_type          text,
    quantity            bigint,
    unit                text,
    unit_price          numeric(38, 12),
    amount_exact        numeric(38, 12) NOT NULL,
    amount              numeric(38, 12) NOT NULL,
    close_id            text REFERENCES period_closes (close_id),
    corrects_period_key text,
    corrects_invoice_id uuid REFERENCES invoices (id),
    corrects_line_id    uuid REFERENCES invoice_lines (id),
    aggregation_key     text,
    created_by          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (invoice_id, aggregation_key),
    CHECK ((kind = 'adjustment') = (adjustment_kind IS NOT NULL))
);
CREATE INDEX invoice_lines_invoice ON invoice_lines (invoice_id, line_no);
CREATE INDEX invoice_lines_close ON invoice_lines (close_id);

-- ------------------------------------------------------------------ payout statements
CREATE TABLE payout_statements (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    partner_id         text        NOT NULL,
    currency           text        NOT NULL,
    period_key         text        NOT NULL,
    status             text        NOT NULL DEFAULT 'draft'
                       CHECK (status IN ('draft', 'finalized', 'sent', 'paid')),
    lines_total        numeric(38, 12) NOT NULL DEFAULT 0,
    carried_in         numeric(38, 12),
    carried_in_from    uuid UNIQUE REFERENCES payout_statements (id),
    balance            numeric(38, 12),
    minimum_payout     numeric(38, 12),
    amount_payable     numeric(38, 12),
    carried_out        numeric(38, 12),
    number             text UNIQUE,
    number_year        integer,
    number_seq         integer,
    issue_date         date,
    prepared_by        text,
    prepared_at        timestamptz,
    finalized_by       text,
    approved_by        text,
    finalized_at       timestamptz,
    sent_by            text,
    sent_at            timestamptz,
    paid_by            text,
    paid_at            timestamptz,
    payment_reference  text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (number_year, number_seq),
    CHECK ((status = 'draft') = (number IS NULL)),
    CHECK (amount_payable IS NULL OR amount_payable >= 0)
);
CREATE UNIQUE INDEX payout_statements_one_draft ON payout_statements (partner_id, currency, period_key) WHERE status = 'draft';
CREATE INDEX payout_statements_partner ON payout_statements (partner_id, created_at, id);

CREATE TABLE statement_lines (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    line_no             bigserial   NOT NULL,
    statement_id        uuid        NOT NULL REFERENCES payout_statements (id),
    contract_id         text        NOT NULL,
    advertiser_id       text        NOT NULL,
    kind                text        NOT NULL CHECK (kind IN ('cpa_payout', 'adjustment')),
    adjustment_kind     text CHECK (adjustment_kind IN (
                            'late_event', 'reversal_after_close', 'ivt_credit', 'backdated_amendment')),
    description         text        NOT NULL,
    contract_version    integer,
    event_type          text,
    quantity            bigint,
    amount_exact        numeric(38, 12) NOT NULL,
    amount              numeric(38, 12) NOT NULL,
    close_id            text REFERENCES period_closes (close_id),
    corrects_period_key text,
    corrects_statement_id uuid REFERENCES payout_statements (id),
    corrects_line_id    uuid REFERENCES statement_lines (id),
    aggregation_key     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (statement_id, aggregation_key),
    CHECK ((kind = 'adjustment') = (adjustment_kind IS NOT NULL))
);
CREATE INDEX statement_lines_statement ON statement_lines (statement_id, line_no);

-- ------------------------------------------------------------------ credit notes
CREATE TABLE credit_notes (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    invoice_id    uuid        NOT NULL UNIQUE REFERENCES invoices (id),
    advertiser_id text        NOT NULL,
    currency      text        NOT NULL,
    number        text        NOT NULL UNIQUE,
    number_year   integer     NOT NULL,
    number_seq    integer     NOT NULL,
    total         numeric(38, 12) NOT NULL,
    reason        text        NOT NULL,
    issue_date    date        NOT NULL,
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (number_year, number_seq)
);
CREATE INDEX credit_notes_advertiser ON credit_notes (advertiser_id, created_at, id);

CREATE TABLE credit_note_lines (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    credit_note_id  uuid        NOT NULL REFERENCES credit_notes (id),
    invoice_line_id uuid        NOT NULL REFERENCES invoice_lines (id),
    description     text        NOT NULL,
    quantity        bigint,
    unit_price      numeric(38, 12),
    amount          numeric(38, 12) NOT NULL,
    position        integer     NOT NULL
);

-- ------------------------------------------------------------------ immutability
-- Lines change only while their document is a draft; a finalized document's content never
-- changes (only its status moves forward). Enforced here, not only in code.
CREATE FUNCTION invoicing_refuse_line_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent_status text;
BEGIN
    IF TG_TABLE_NAME = 'invoice_lines' THEN
        SELECT status INTO parent_status FROM invoices WHERE id = COALESCE(NEW.invoice_id, OLD.invoice_id);
    ELSE
        SELECT status INTO parent_status FROM payout_statements WHERE id = COALESCE(NEW.statement_id, OLD.statement_id);
    END IF;
    IF parent_status IS DISTINCT FROM 'draft' THEN
        RAISE EXCEPTION '% of a % document refused: finalized documents never change', TG_OP, parent_status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN COALESCE(NEW, OLD);
END
$$;
CREATE TRIGGER invoice_lines_draft_only BEFORE INSERT OR UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION invoicing_refuse_line_change();
CREATE TRIGGER statement_lines_draft_only BEFORE INSERT OR UPDATE OR DELETE ON statement_lines
    FOR EACH ROW EXECUTE FUNCTION invoicing_refuse_line_change();

CREATE FUNCTION invoicing_refuse_document_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'a finalized document is never deleted' USING ERRCODE = 'check_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status <> 'draft' AND (NEW.total IS DISTINCT FROM OLD.total OR NEW.number IS DISTINCT FROM OLD.number
            OR NEW.advertiser_id IS DISTINCT FROM OLD.advertiser_id OR NEW.currency IS DISTINCT FROM OLD.currency
            OR NEW.issue_date IS DISTINCT FROM OLD.issue_date OR NEW.due_date IS DISTINCT FROM OLD.due_date) THEN
        RAISE EXCEPTION 'finalized invoice % never changes', OLD.number USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoicing_refuse_document_change();

CREATE FUNCTION invoicing_refuse_statement_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'a finalized statement is never deleted' USING ERRCODE = 'check_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status <> 'draft' AND (NEW.lines_total IS DISTINCT FROM OLD.lines_total OR NEW.number IS DISTINCT FROM OLD.number
            OR NEW.amount_payable IS DISTINCT FROM OLD.amount_payable OR NEW.carried_out IS DISTINCT FROM OLD.carried_out
            OR NEW.carried_in IS DISTINCT FROM OLD.carried_in) THEN
        RAISE EXCEPTION 'finalized statement % never changes', OLD.number USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER payout_statements_immutable BEFORE UPDATE OR DELETE ON payout_statements
    FOR EACH ROW EXECUTE FUNCTION invoicing_refuse_statement_change();

-- ------------------------------------------------------------------ ledger
CREATE TABLE ledger_accounts (
    code  text PRIMARY KEY,
    name  text NOT NULL,
    kind  text NOT NULL CHECK (kind IN ('asset', 'liability', 'revenue', 'expense'))
);
INSERT INTO ledger_accounts (code, name, kind) VALUES
    ('1000', 'Cash', 'asset'),
    ('1100', 'Accounts receivable', 'asset'),
    ('2100', 'Partner payouts payable', 'liability'),
    ('4000', 'Advertising revenue', 'revenue'),
    ('5000', 'Cost of revenue (partner payouts)', 'expense');

CREATE TABLE journal_entries (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    entry_no    bigserial UNIQUE,
    currency    text        NOT NULL,
    description text        NOT NULL,
    source_type text        NOT NULL,
    source_id   text        NOT NULL,
    posted_by   text        NOT NULL,
    posted_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_type, source_id)
);

-- amount is signed: debit > 0, credit < 0. Every entry sums to zero.
CREATE TABLE journal_lines (
    id           bigserial PRIMARY KEY,
    entry_id     uuid        NOT NULL REFERENCES journal_entries (id),
    account_code text        NOT NULL REFERENCES ledger_accounts (code),
    party_type   text CHECK (party_type IN ('advertiser', 'partner')),
    party_id     text,
    amount       numeric(38, 12) NOT NULL CHECK (amount <> 0)
);
CREATE INDEX journal_lines_entry ON journal_lines (entry_id);
CREATE INDEX journal_lines_account ON journal_lines (account_code, party_id);

-- The database itself refuses an unbalanced entry: checked at commit (deferred), so an entry
-- may be written line by line inside its transaction but never committed out of balance.
CREATE FUNCTION journal_entry_must_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    entry uuid := NEW.id;
    total numeric;
    lines integer;
BEGIN
    SELECT COALESCE(SUM(amount), 0), COUNT(*) INTO total, lines FROM journal_lines WHERE entry_id = entry;
    IF lines < 2 THEN
        RAISE EXCEPTION 'journal entry % has % line(s); a double entry needs at least two', entry, lines
            USING ERRCODE = 'check_violation';
    END IF;
    IF total <> 0 THEN
        RAISE EXCEPTION 'journal entry % is unbalanced: debits minus credits = %', entry, total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE FUNCTION journal_entry_line_must_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total numeric;
    lines integer;
BEGIN
    SELECT COALESCE(SUM(amount), 0), COUNT(*) INTO total, lines FROM journal_lines WHERE entry_id = NEW.entry_id;
    IF lines < 2 OR total <> 0 THEN
        RAISE EXCEPTION 'journal entry % is unbalanced: % line(s), debits minus credits = %', NEW.entry_id, lines, total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER journal_lines_balanced AFTER INSERT ON journal_lines
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION journal_entry_line_must_balance();
-- An entry committed with no lines at all is refused too.
CREATE CONSTRAINT TRIGGER journal_entries_have_lines AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION journal_entry_must_balance();

CREATE FUNCTION journal_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused (post a reversing entry)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION journal_refuse_change();
CREATE TRIGGER journal_lines_append_only BEFORE UPDATE OR DELETE ON journal_lines
    FOR EACH ROW EXECUTE FUNCTION journal_refuse_change();
