"""The desktop app (PySide6): a window over the same façade the CLI uses (`pymachine.hostvm.*`)."""
