"""The host agent: one detached process per running machine that keeps the SSH link, the engine socket and
the published ports alive (see docs/hostagent.md). `launcher` is the API the rest of the host code calls."""
