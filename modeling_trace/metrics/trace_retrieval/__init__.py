"""Local `evaluate` module `trace_retrieval`; the implementation is `trace_retrieval.py` (also loadable by `evaluate.load`)."""
