"""Mail coming in to relay rather than going out through it.

Today that is returned mail (``returned``): the listener for bounce domains and
complaint addresses, which reads each report with the pure parser in
``relay.bounces`` and records it. Inbound routes (mail for an application's own
addresses, handed to a webhook) will live here too.
"""
