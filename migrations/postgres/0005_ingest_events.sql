-- Behaviour from the shop (`POST /ingest/v1/events`): every event id applied, per account,
-- inserted in the same transaction as the follower change it made, so that a resend is
-- recognised and nothing is applied twice or applied without its id.
CREATE TABLE ingest_events (
    account    text COLLATE "C" NOT NULL,
    event_id   text COLLATE "C" NOT NULL,
    openid     text COLLATE "C" NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, event_id)
);
