-- Analysis templates (PostgreSQL), table for table like the SQLite one: TIMESTAMPTZ, JSONB.

CREATE TABLE analysis_templates (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    config JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX analysis_templates_created ON analysis_templates (created_at, id);
