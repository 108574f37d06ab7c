-- Ringline's first schema (SQLite). Timestamps are ISO-8601 UTC text of fixed width (they sort as they
-- compare); JSON documents are TEXT; booleans are 0/1. Never edit a released migration: add a new one.

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,  -- the one index an authenticated request uses
    scopes TEXT NOT NULL,           -- JSON array of scope names
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    config TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX agents_created ON agents (created_at, id);

CREATE TABLE sip_trunks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE phone_numbers (
    id TEXT PRIMARY KEY,
    number TEXT NOT NULL UNIQUE,
    provider TEXT NOT NULL CHECK (provider IN ('twilio', 'telnyx', 'plivo', 'vonage', 'exotel', 'sip')),
    inbound_agent_id TEXT REFERENCES agents (id) ON DELETE RESTRICT,
    outbound_agent_id TEXT REFERENCES agents (id) ON DELETE RESTRICT,
    sip_trunk_id TEXT REFERENCES sip_trunks (id) ON DELETE RESTRICT,
    label TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX phone_numbers_inbound_agent ON phone_numbers (inbound_agent_id);
CREATE INDEX phone_numbers_outbound_agent ON phone_numbers (outbound_agent_id);
CREATE INDEX phone_numbers_sip_trunk ON phone_numbers (sip_trunk_id);

CREATE TABLE tool_templates (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('function', 'end_call', 'transfer_call', 'send_dtmf')),
    config TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- agent_id is not a foreign key: a call's history outlives its agent, and agents may come from the
-- configuration file rather than this table.
CREATE TABLE calls (
    id TEXT PRIMARY KEY,
    agent_id TEXT,
    direction TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    status TEXT NOT NULL CHECK (status IN ('queued', 'ringing', 'in_progress', 'forwarding', 'ended')),
    from_number TEXT NOT NULL DEFAULT '',
    to_number TEXT NOT NULL DEFAULT '',
    node TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    started_at TEXT,
    ended_at TEXT,
    end_reason TEXT,
    duration_s REAL NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL DEFAULT '{}',
    variables TEXT NOT NULL DEFAULT '{}',
    latency TEXT NOT NULL DEFAULT '[]',
    analysis TEXT,
    recording_path TEXT,
    outbox_seq INTEGER NOT NULL DEFAULT 0  -- the last outbox seq given to this call's events
);
CREATE INDEX calls_created ON calls (created_at, id);
CREATE INDEX calls_agent_created ON calls (agent_id, created_at);
CREATE INDEX calls_from_created ON calls (from_number, created_at);
CREATE INDEX calls_to_created ON calls (to_number, created_at);
CREATE INDEX calls_live ON calls (status) WHERE status <> 'ended';

-- The journal: appended in batches while the call goes. No foreign key to calls, so a line is never
-- refused because its call's row is late; deleting a call deletes its lines in the same transaction.
CREATE TABLE call_messages (
    call_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool', 'system')),
    content TEXT NOT NULL,
    interrupted INTEGER NOT NULL DEFAULT 0 CHECK (interrupted IN (0, 1)),
    at TEXT NOT NULL,
    extra TEXT,
    PRIMARY KEY (call_id, seq)
);

CREATE TABLE call_events (
    call_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (call_id, seq)
);

-- Webhooks to send, written in the transaction of the change that caused them.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT REFERENCES calls (id) ON DELETE SET NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    url TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL,
    delivered_at TEXT
);
CREATE UNIQUE INDEX outbox_call_seq ON outbox (call_id, seq) WHERE call_id IS NOT NULL;
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX outbox_created ON outbox (created_at, id);

CREATE TABLE delivery_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    at TEXT NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms REAL
);
CREATE INDEX delivery_attempts_outbox ON delivery_attempts (outbox_id, id);
