-- Contact lookup (issue 15): the ERP's own contacts per company, the local index of each
-- mailbox's personal contacts (Graph cannot search them, and walking every folder on each
-- keystroke would spend the mailbox's 4-request budget), and who each operator has mailed.

-- Replaced as a whole by PUT /api/v1/companies/{code}/contacts.
CREATE TABLE erp_contacts (
    company    TEXT NOT NULL REFERENCES companies (code) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    name       TEXT NOT NULL,
    address    TEXT NOT NULL,
    address_lc TEXT NOT NULL,   -- trimmed, NFC, lower-cased: what one address is
    account    TEXT,
    role       TEXT,
    haystack   TEXT NOT NULL,   -- ' word word …': what a search matches word prefixes in
    PRIMARY KEY (company, key)
);
CREATE INDEX erp_contacts_address ON erp_contacts (company, address_lc);

-- The folders of one mailbox (`owner`: `op:CODE` or `app:TENANT:mailbox`), each with the
-- deltaLink its next refresh starts from.
CREATE TABLE contact_folders (
    owner        TEXT NOT NULL,
    folder_id    TEXT NOT NULL,
    name         TEXT NOT NULL,
    delta_link   TEXT,
    refreshed_ms BIGINT NOT NULL,
    PRIMARY KEY (owner, folder_id)
);

CREATE TABLE personal_contacts (
    owner      TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    folder_id  TEXT NOT NULL,
    name       TEXT NOT NULL,
    name_lc    TEXT NOT NULL,
    address    TEXT NOT NULL,
    address_lc TEXT NOT NULL,
    company    TEXT,
    haystack   TEXT NOT NULL,
    PRIMARY KEY (owner, contact_id, address_lc)
);
CREATE INDEX personal_contacts_browse ON personal_contacts (owner, name_lc, contact_id, address_lc);

-- How often an operator has queued mail to an address through officebridge: a relevance signal.
CREATE TABLE operator_recipients (
    operator TEXT NOT NULL,
    address  TEXT NOT NULL,   -- lower-cased
    sends    BIGINT NOT NULL,
    last_ms  BIGINT NOT NULL,
    PRIMARY KEY (operator, address)
);
