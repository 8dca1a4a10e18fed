"""The `istpan` command line: one module per sub-command."""
