-- Shop events for a person no follower of the account is known as yet (an event by
-- unionid before a sync linked it, `[ingest] unknown = "keep"`): kept until a sync links
-- the unionid, then applied through `ingest_events` and deleted in that same transaction.
CREATE TABLE ingest_kept (
    account  text COLLATE "C" NOT NULL,
    event_id text COLLATE "C" NOT NULL,
    unionid  text COLLATE "C" NOT NULL,
    event    jsonb NOT NULL,
    kept_at  bigint NOT NULL,
    PRIMARY KEY (account, event_id)
);
CREATE INDEX ingest_kept_by_unionid ON ingest_kept (account, unionid, event_id);
