"""The `pymachine` command line."""
