"""Dataset builders for TRACE: every source is turned into one schema (`datasets_scripts.schema`)."""
