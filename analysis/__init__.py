"""Traces -> numbers: metrics, utilization, economics, curves, figures and reports."""
