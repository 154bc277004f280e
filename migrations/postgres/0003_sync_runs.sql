-- The latest follower sync of each account (`siyu followers sync`): its cursor into
-- WeChat's follower list and its counts, written with each batch of followers it imports,
-- so a sync stopped by a crash or Ctrl-C resumes where it stopped.
CREATE TABLE sync_runs (
    account text COLLATE "C" PRIMARY KEY,
    run     jsonb NOT NULL
);
