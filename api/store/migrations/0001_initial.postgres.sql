-- Ringline's first schema (PostgreSQL), table for table like the SQLite one: TIMESTAMPTZ, JSONB, BOOLEAN.
-- Never edit a released migration: add a new one.

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,  -- the one index an authenticated request uses
    scopes JSONB NOT NULL,          -- JSON array of scope names
    created_at TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    config JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX agents_created ON agents (created_at, id);

CREATE TABLE sip_trunks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    config JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE phone_numbers (
    id TEXT PRIMARY KEY,
    number TEXT NOT NULL UNIQUE,
    provider TEXT NOT NULL CHECK (provider IN ('twilio', 'telnyx', 'plivo', 'vonage', 'exotel', 'sip')),
    inbound_agent_id TEXT REFERENCES agents (id) ON DELETE RESTRICT,
    outbound_agent_id TEXT REFERENCES agents (id) ON DELETE RESTRICT,
    sip_trunk_id TEXT REFERENCES sip_trunks (id) ON DELETE RESTRICT,
    label TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX phone_numbers_inbound_agent ON phone_numbers (inbound_agent_id);
CREATE INDEX phone_numbers_outbound_agent ON phone_numbers (outbound_agent_id);
CREATE INDEX phone_numbers_sip_trunk ON phone_numbers (sip_trunk_id);

CREATE TABLE tool_templates (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('function', 'end_call', 'transfer_call', 'send_dtmf')),
    config JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
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
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    ended_at TIMESTAMPTZ,
    end_reason TEXT,
    duration_s DOUBLE PRECISION NOT NULL DEFAULT 0,
    metadata JSONB NOT NULL DEFAULT '{}',
    variables JSONB NOT NULL DEFAULT '{}',
    latency JSONB NOT NULL DEFAULT '[]',
    analysis JSONB,
    recording_path TEXT,
    outbox_seq BIGINT NOT NULL DEFAULT 0  -- the last outbox seq given to this call's events
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
    seq BIGINT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool', 'system')),
    content TEXT NOT NULL,
    interrupted BOOLEAN NOT NULL DEFAULT FALSE,
    at TIMESTAMPTZ NOT NULL,
    extra JSONB,
    PRIMARY KEY (call_id, seq)
);

CREATE TABLE call_events (
    call_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    payload JSONB NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (call_id, seq)
);

-- Webhooks to send, written in the transaction of the change that caused them.
CREATE TABLE outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id TEXT REFERENCES calls (id) ON DELETE SET NULL,
    seq BIGINT NOT NULL DEFAULT 0,
    type TEXT NOT NULL,
    payload JSONB NOT NULL,
    url TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    delivered_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX outbox_call_seq ON outbox (call_id, seq) WHERE call_id IS NOT NULL;
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX outbox_created ON outbox (created_at, id);

CREATE TABLE delivery_attempts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id BIGINT NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    at TIMESTAMPTZ NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms DOUBLE PRECISION
);
CREATE INDEX delivery_attempts_outbox ON delivery_attempts (outbox_id, id);
