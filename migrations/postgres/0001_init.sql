-- siyu's state on PostgreSQL, one table per concern. Applied by `siyu migrate` and at
-- start, in order, recorded in siyu_migrations. Text that is scanned in order (openids,
-- campaign names) is COLLATE "C": byte order, the order sled keeps, whatever the
-- database's locale.

-- One row per follower: the follower, their recent deliveries (dedupe keys with the
-- cached answers) and their history, in the record format of src/store/format.rs. One
-- row is what a callback locks and rewrites.
CREATE TABLE followers (
    account text COLLATE "C" NOT NULL,
    openid  text COLLATE "C" NOT NULL,
    record  bytea NOT NULL,
    PRIMARY KEY (account, openid)
);

CREATE TABLE audit (
    id    bigserial PRIMARY KEY,
    at    bigint NOT NULL,
    entry jsonb NOT NULL
);
CREATE INDEX audit_by_time ON audit (at DESC, id DESC);

CREATE TABLE tokens (
    account    text PRIMARY KEY,
    token      jsonb NOT NULL,
    expires_at bigint NOT NULL
);

CREATE TABLE tag_ids (
    account text NOT NULL,
    tag     text NOT NULL,
    id      bigint NOT NULL,
    PRIMARY KEY (account, tag)
);

-- The outbox: calls to WeChat, delivered in the background. An instance leases the items
-- it is delivering (lease_owner until lease_until_ms) so that no other instance sends
-- them meanwhile; an instance killed mid-call lets its lease run out.
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    account        text NOT NULL,
    item           jsonb NOT NULL,
    lease_owner    text,
    lease_until_ms bigint
);

CREATE TABLE dead_letters (
    id   bigint PRIMARY KEY,
    dead jsonb NOT NULL
);

CREATE TABLE coupon_batches (
    batch    text PRIMARY KEY,
    issued   bigint NOT NULL DEFAULT 0,
    redeemed bigint NOT NULL DEFAULT 0
);

CREATE TABLE coupons (
    code        text PRIMARY KEY,
    batch       text NOT NULL,
    coupon      jsonb NOT NULL,
    expires_at  bigint NOT NULL,
    redeemed_at bigint
);
CREATE INDEX coupons_by_batch ON coupons (batch);

CREATE TABLE coupon_holders (
    batch   text NOT NULL,
    account text NOT NULL,
    openid  text NOT NULL,
    held    integer NOT NULL,
    PRIMARY KEY (batch, account, openid)
);

-- Idempotency: the same request (a callback's dedupe key, a campaign's send) claims once.
CREATE TABLE coupon_requests (
    account text NOT NULL,
    openid  text NOT NULL,
    batch   text NOT NULL,
    request text NOT NULL,
    code    text NOT NULL,
    PRIMARY KEY (account, openid, batch, request)
);

CREATE TABLE campaigns (
    name text COLLATE "C" PRIMARY KEY,
    run  jsonb NOT NULL
);

CREATE TABLE campaign_progress (
    campaign text COLLATE "C" NOT NULL,
    openid   text COLLATE "C" NOT NULL,
    progress jsonb NOT NULL,
    -- Queued or being sent: what `campaign_pending` counts.
    pending  boolean NOT NULL,
    PRIMARY KEY (campaign, openid)
);
CREATE INDEX campaign_pending ON campaign_progress (campaign) WHERE pending;

CREATE TABLE campaign_msgids (
    account  text NOT NULL,
    msgid    bigint NOT NULL,
    campaign text NOT NULL,
    openid   text NOT NULL,
    PRIMARY KEY (account, msgid)
);

CREATE TABLE campaign_jobs (
    campaign text COLLATE "C" NOT NULL,
    msg_id   bigint NOT NULL,
    job      jsonb NOT NULL,
    PRIMARY KEY (campaign, msg_id)
);

-- Named leases: which instance drives a campaign, refreshes an account's token.
CREATE TABLE leases (
    name     text PRIMARY KEY,
    owner    text NOT NULL,
    until_ms bigint NOT NULL
);
