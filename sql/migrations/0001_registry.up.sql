-- The registry tables shared with KanthorQ for Go, and the helper functions the
-- per-stream and per-consumer statements use.

CREATE TABLE IF NOT EXISTS kanthorq_stream_registry (
    id         VARCHAR(64)  NOT NULL,
    name       VARCHAR(256) NOT NULL,
    created_at BIGINT       NOT NULL DEFAULT 0,
    updated_at BIGINT       NOT NULL DEFAULT 0,
    CONSTRAINT kanthorq_stream_registry_pkey PRIMARY KEY (id),
    CONSTRAINT kanthorq_stream_registry_name_key UNIQUE (name)
);

CREATE TABLE IF NOT EXISTS kanthorq_consumer_registry (
    stream_id          VARCHAR(64)    NOT NULL,
    stream_name        VARCHAR(256)   NOT NULL,
    id                 VARCHAR(64)    NOT NULL,
    name               VARCHAR(256)   NOT NULL,
    kind               VARCHAR(256)   NOT NULL DEFAULT 'primary',
    subject_includes   VARCHAR(256)[] NOT NULL DEFAULT '{}',
    subject_excludes   VARCHAR(256)[] NOT NULL DEFAULT '{}',
    cursor             VARCHAR(64)    NOT NULL DEFAULT '',
    attempt_max        SMALLINT       NOT NULL DEFAULT 3,
    visibility_timeout BIGINT         NOT NULL DEFAULT 300000,
    created_at         BIGINT         NOT NULL DEFAULT 0,
    updated_at         BIGINT         NOT NULL DEFAULT 0,
    CONSTRAINT kanthorq_consumer_registry_pkey PRIMARY KEY (name),
    CONSTRAINT kanthorq_consumer_registry_id_key UNIQUE (id)
);

-- Conversion orders events by (inserting transaction, id); cursor_txid is the transaction
-- half of the cursor. A consumer written by a client that does not know it starts at 0.
ALTER TABLE kanthorq_consumer_registry
    ADD COLUMN IF NOT EXISTS cursor_txid XID8 NOT NULL DEFAULT '0';

CREATE OR REPLACE FUNCTION kanthorq_now_ms() RETURNS BIGINT
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT
$$;

-- A NATS subject filter as an anchored POSIX regular expression: '*' is one token, '>' is
-- one or more trailing tokens, and every ASCII punctuation character of a literal token is
-- escaped. kanthorq.subjects.matches is the Python twin of this function.
CREATE OR REPLACE FUNCTION kanthorq_subject_regex(pattern TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT '^' || string_agg(
        CASE tok
            WHEN '*' THEN '[^.]+'
            WHEN '>' THEN '.+'
            ELSE regexp_replace(tok, '([!-/:-@\[-`{-~])', '\\\1', 'g')
        END,
        '\.' ORDER BY ord
    ) || '$'
    FROM unnest(string_to_array(pattern, '.')) WITH ORDINALITY AS t(tok, ord)
$$;
