"""Evaluation harness: metrics with confidence intervals, noisy voting, reports."""
