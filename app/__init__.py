"""Front ends of pymachine: the CLI and the PySide6 desktop app. Rendering only; logic lives in hostvm."""
