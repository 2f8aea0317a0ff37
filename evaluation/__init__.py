"""Evaluation harness: metrics with confidence intervals, noisy voting, reports."""
import os

# Quiet TensorFlow's C++ start-up banner unless the user chose a log level.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

