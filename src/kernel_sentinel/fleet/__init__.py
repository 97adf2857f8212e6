"""Beyond one machine: every server's deaths and memory errors in one shared store, one view of the fleet.

``cells`` folds copies of the same cell together; ``forward`` carries records from each server's local
SQLite outbox to the shared PostgreSQL; ``roles`` scopes PostgreSQL rows per hub user; ``query`` answers
``kernel-sentinel fleet``; ``render`` draws it (terminal, JSON, HTML); ``cli`` registers the command.
"""
