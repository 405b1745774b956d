"""The reliability battery (``make test-reliability``)."""
