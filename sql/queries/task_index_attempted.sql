-- A rate-limited consumer's claims count the tasks claimed lately (kanthorq_claim_budget):
-- every claim sets attempted_at. Only such consumers have it.
CREATE INDEX IF NOT EXISTS {{tasks_attempted_idx}} ON {{tasks}} (attempted_at)
