"""Validation of the engine against queueing theory: closed forms, statistics, cases, report."""
