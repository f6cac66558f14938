"""Local `evaluate` module `trace_classification`; the implementation is `trace_classification.py` (also loadable by `evaluate.load`)."""
