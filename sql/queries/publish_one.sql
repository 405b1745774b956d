-- $1 id, $2 subject, $3 body, $4 metadata, $5 created_at
INSERT INTO {{stream}} (id, subject, body, metadata, created_at) VALUES ($1, $2, $3, $4, $5)
