-- The registry of parties (issue 18 item 6, "names beside ids"): the display name of each
-- advertiser and partner the contracts name, so the console can show "Acme Corp (adv-acme)".
-- Contracts keep referring to parties by id; a party needs no row here (an unnamed id is shown
-- as the id alone), so there is no foreign key from contracts.
CREATE TABLE parties (
    party_type   text        NOT NULL CHECK (party_type IN ('advertiser', 'partner')),
    party_id     text        NOT NULL CHECK (char_length(party_id) BETWEEN 1 AND 256),
    display_name text        NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_by   text        NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (party_type, party_id)
);
