-- Report counters (`siyu report`), written in the transaction of the callback or shop
-- event that counts them. A counter is spread over shards (from the follower's openid) so
-- that concurrent commits rarely wait on one row's lock; a report sums the shards.
CREATE TABLE report_counts (
    account text COLLATE "C" NOT NULL,
    day     bigint NOT NULL, -- local days since 1970-01-01
    channel text COLLATE "C" NOT NULL,
    metric  text COLLATE "C" NOT NULL,
    shard   smallint NOT NULL,
    n       bigint NOT NULL,
    PRIMARY KEY (account, day, channel, metric, shard)
);
-- Each counting commit's counts, for `siyu report rebuild`.
CREATE TABLE report_facts (
    id      bigserial PRIMARY KEY,
    account text COLLATE "C" NOT NULL,
    counts  jsonb NOT NULL
);
CREATE INDEX report_facts_by_account ON report_facts (account, id);
