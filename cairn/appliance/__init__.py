"""The appliance: a long-lived service over one repository (REST API, scheduler, jobs).

It owns the repository it serves and keeps its own bookkeeping (machines, tokens, jobs,
schedules, uploads in flight) in ``<repo>/appliance.db``, apart from the store's catalog:
the store stays ignorant of HTTP and agents, and losing ``appliance.db`` never loses a point.
"""
