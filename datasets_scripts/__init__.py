"""Dataset builders for TRACE: every source is turned into one schema (`trace_datasets.schema`)."""
