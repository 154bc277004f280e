-- The codes siyu makes for channels with `code = "auto"` (channels.toml): one row per
-- (account, channel). `queued_at` is set while an outbox item asking for a code is
-- queued; the statement that sets it queues the item, so two instances (or an operator
-- and the server's look) never queue two. `code` is the code in use (JSON `IssuedCode`),
-- `last_error` why the last item died.
CREATE TABLE channel_codes (
    account    text COLLATE "C" NOT NULL,
    channel    text COLLATE "C" NOT NULL,
    queued_at  bigint,
    code       jsonb,
    last_error text,
    PRIMARY KEY (account, channel)
);
