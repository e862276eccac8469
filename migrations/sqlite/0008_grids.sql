-- Shared grids (issue 16): a grid the ERP shares with an operator for the Excel pane, its
-- rows as typed cells ready for Range.values, and the change sets published back from the
-- pane. Stored in the database so every instance serves them. Times are milliseconds since
-- the Unix epoch.

CREATE TABLE grids (
    id          TEXT PRIMARY KEY NOT NULL,
    operator    TEXT NOT NULL REFERENCES operators (code) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    key_column  TEXT NOT NULL,
    columns     TEXT NOT NULL,          -- the checked columns, JSON
    row_count   INTEGER NOT NULL,
    ready       INTEGER NOT NULL,          -- 0 while its rows are still being stored
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL
);
CREATE INDEX grids_operator ON grids (operator, created_ms);
CREATE INDEX grids_expires ON grids (expires_ms);

CREATE TABLE grid_rows (
    grid_id TEXT NOT NULL REFERENCES grids (id) ON DELETE CASCADE,
    n       INTEGER NOT NULL,              -- 0-based row number
    cells   TEXT NOT NULL,              -- one JSON value per column
    PRIMARY KEY (grid_id, n)
);

-- The latest change set published from the pane, for the ERP to pick up.
CREATE TABLE grid_changes (
    grid_id      TEXT PRIMARY KEY NOT NULL REFERENCES grids (id) ON DELETE CASCADE,
    published_ms INTEGER NOT NULL,
    by_operator  TEXT NOT NULL,
    body         TEXT NOT NULL          -- {"changes", "problems"}, JSON
);
