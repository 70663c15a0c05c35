"""Bounces, as pure functions of their input: what a refusal means (classify), reading returned mail
(parse), authenticated return paths (verp). No I/O here: the listener that takes returned mail in is
``relay.inbound.returned``."""
