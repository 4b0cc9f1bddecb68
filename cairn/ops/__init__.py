"""The operations: what a user can do to a repository, written once for every face."""
