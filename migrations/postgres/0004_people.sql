-- The people index: every identity (account, openid or WeCom external_userid) known to
-- carry a unionid, so that one person's identities across the brand's accounts are found
-- at once (`GET /admin/v1/people/{unionid}`). Written with the follower by each sync step.
CREATE TABLE people (
    unionid text COLLATE "C" NOT NULL,
    account text COLLATE "C" NOT NULL,
    openid  text COLLATE "C" NOT NULL,
    PRIMARY KEY (unionid, account, openid)
);
