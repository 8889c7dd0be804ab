-- The approvals queue (GET /approvals) pages the submitted versions in
-- (submitted_at, contract_id, version) order: a partial index keeps that a range scan over the
-- few versions waiting, however many versions the contracts have accumulated.
CREATE INDEX contract_versions_submitted ON contract_versions (submitted_at, contract_id, version)
    WHERE state = 'submitted';
