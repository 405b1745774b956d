"""Benchmarks: kanthorq against its peers and raw asyncpg (``make bench``)."""
