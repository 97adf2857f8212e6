"""Beyond one machine: every server's deaths and memory errors in one shared store, one view of the fleet.

``cells`` folds copies of the same cell together; ``forward`` carries records from each server's local
SQLite outbox to the shared PostgreSQL; ``roles`` scopes PostgreSQL rows per hub user; ``query`` answers
``kernel-sentinel fleet`` (``report/fleet_*`` draw it: terminal, JSON, HTML); ``outbox`` says which records
the shared database has not got, and why; ``cli`` registers the command; ``kernel_side`` records the guard's
memory errors in the kernel; ``spawner`` (JupyterHub, one memory cgroup per user's server) and
``hub_service`` (the fleet page behind the hub's login) are for hubs.
"""
