"""Apps deployed by `git push` (docs/deploy.md): model (typed values, state file), repo (the bare repository
and its hook), router (the container that holds the app's port), release (build, start, health, switch),
apps (create, list, info)."""
