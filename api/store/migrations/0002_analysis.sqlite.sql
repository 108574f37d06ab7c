-- Analysis templates: what a post-call analysis asks for (summary prompt, structured-data schema, success
-- rubric, sentiment), named once and referenced by agents (``analysis.template``, by name or id).

CREATE TABLE analysis_templates (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    config TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX analysis_templates_created ON analysis_templates (created_at, id);
