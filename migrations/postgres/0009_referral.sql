-- Referral programmes (任务宝, README "Referral programmes"). 0008 is the channel codes'.
-- Participants: who asked for a personal code (id → openid, the code, the poster's media).
CREATE TABLE referral_participants (
    programme text COLLATE "C" NOT NULL,
    id        text COLLATE "C" NOT NULL,
    body      jsonb NOT NULL,
    PRIMARY KEY (programme, id)
);
-- One invite per (programme, invitee): the primary key is the create-if-absent.
CREATE TABLE referral_invites (
    programme text COLLATE "C" NOT NULL,
    invitee   text COLLATE "C" NOT NULL,
    inviter   text COLLATE "C" NOT NULL,
    body      jsonb NOT NULL,
    PRIMARY KEY (programme, invitee)
);
CREATE INDEX referral_invites_by_inviter ON referral_invites (programme, inviter);
-- One reward per (programme, inviter, tier), ever.
CREATE TABLE referral_rewards (
    programme text COLLATE "C" NOT NULL,
    inviter   text COLLATE "C" NOT NULL,
    tier      bigint NOT NULL,
    body      jsonb NOT NULL,
    PRIMARY KEY (programme, inviter, tier)
);
