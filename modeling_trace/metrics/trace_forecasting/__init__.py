"""Local `evaluate` module `trace_forecasting`; the implementation is `trace_forecasting.py` (also loadable by `evaluate.load`)."""
