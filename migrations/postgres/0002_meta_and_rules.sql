-- Small named values of the store itself: `siyu store copy` keeps its checkpoint here,
-- so a copy interrupted by a crash resumes where it stopped.
CREATE TABLE store_meta (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- Rules shared by every instance (README "Several instances on PostgreSQL"): each rule
-- folder's versions, newest highest. An instance that installs new rules from its folder
-- (a reload, an admin write, a start with files never seen) adds a version; every
-- instance follows the newest version of each folder within a second, writing its files
-- into its own folder. `dir` is the folder as the config names it.
CREATE TABLE rule_versions (
    dir     text NOT NULL,
    version bigint NOT NULL,
    hash    text NOT NULL,
    -- [{"name": "10-welcome.toml", "text": "…"}, …], the folder's rule files.
    files   jsonb NOT NULL,
    by_who  text NOT NULL,
    at      bigint NOT NULL,
    PRIMARY KEY (dir, version)
);
CREATE INDEX rule_versions_by_hash ON rule_versions (dir, hash);
