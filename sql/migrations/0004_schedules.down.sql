DROP TABLE IF EXISTS kanthorq_schedule;
