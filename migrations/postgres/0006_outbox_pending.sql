-- The due messages in the order they are claimed, for a claim that reads one index entry:
-- with the two pending states and the expired leases in one OR, both databases gathered and
-- sorted every pending message for each claim, so draining n messages cost n² (issue 14's
-- benchmark: 33 messages/s with 10,000 queued, 750/s with 400).
CREATE INDEX outbox_pending ON outbox (next_attempt_ms) WHERE state IN ('queued', 'retrying');
