-- Health: the database answers, with kanthorq's schema (its clock function) in place.
SELECT kanthorq_now_ms()
