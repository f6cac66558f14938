"""Entry points of TRACE training (thin: argument parsing and data wiring; the logic is in `modeling_trace.training`)."""
