"""The differential machine's worlds (see tests/contracts/test_differential.py)."""
