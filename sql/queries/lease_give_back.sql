-- Give the lease $1 of holder $2 back.
DELETE FROM kanthorq_lease WHERE name = $1 AND holder = $2
