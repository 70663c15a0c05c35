"""Every enum in the OpenAPI document is the code's own vocabulary: states, event types, bounce kinds and
phases, scopes, sources, ... A new enum written into the document as literals fails here until it is tied
to the constant the code uses."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from relay.api.openapi import document
from relay.api.queues import OPERATIONS
from relay.bounces.classify import Classification, Kind, Phase
from relay.domains import FAILED, KEY_STATES, PENDING, VERIFIED
from relay.events import ACCEPTED_STATES, STATS_INTERVALS, WOULD, EventKind, State
from relay.keys import SCOPES
from relay.message import SOURCES
from relay.nodes import STATUSES as NODE_STATUSES
from relay.sandbox import FORMATS
from relay.store.idempotency import STATES
from relay.store.queue import RESEND_RESULTS
from relay.suppression import BOUNCE_SOURCES, REASONS, SuppressionPolicy, decide


def _enums(node: Any, path: str = "") -> Iterator[tuple[str, list[Any]]]:
    """(where, values) for every ``enum`` in the document; list items are named by their ``name`` if any."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "enum":
                yield path, value
            else:
                yield from _enums(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _enums(item, f"{path}/{item.get('name', i) if isinstance(item, dict) else i}")


# where in the document (a pattern) → the code's values
CODE = [
    # A submission's answer: the recipients start queued, or scheduled with a send_at.
    (r"MessageAccepted/properties/status$", [s.value for s in ACCEPTED_STATES]),
    (r"MessageAccepted/properties/recipients/items/properties/status$", [*ACCEPTED_STATES, State.SUPPRESSED]),
    # A recipient's state, every one of them.
    (r"Recipient/properties/status$", [s.value for s in State]),
    (r"(Message|SandboxMessage)/properties/source$", list(SOURCES)),
    (r"IdempotencyRecord/properties/state$", list(STATES)),
    (r"ApiKeyRequest/properties/scopes/items$", list(SCOPES)),
    (r"Resend/properties/recipients/items/properties/result$", list(RESEND_RESULTS)),
    (r"Bounce/properties/type$|/v1/bounces/get/parameters/(kind|type)/schema$", [k.value for k in Kind]),
    (r"Bounce/properties/source$", list(BOUNCE_SOURCES)),
    (r"Bounce/properties/phase$", [p.value for p in Phase] + [None]),  # null: a returned report
    (r"(Event/properties/type|events/items)$", [k.value for k in EventKind]),
    (r"Domain/properties/(status|checks/additionalProperties/properties/status)$", [VERIFIED, PENDING, FAILED]),
    (r"Domain/properties/dkim/items/properties/state$", list(KEY_STATES)),
    (r"DryRun/properties/status$", list(WOULD.values())),
    (r"DryRun/properties/recipients/items/properties/status$", [*WOULD.values(), State.SUPPRESSED]),
    (r"/v1/sending-queues/\{domain\}/.*/domain/schema/not$", list(OPERATIONS)),
    (r"/v1/stats/get/parameters/interval/schema$", list(STATS_INTERVALS)),
    (r"/v1/sandbox/messages/\{id\}/get/parameters/format/schema$", list(FORMATS)),
    (r"Node/properties/status$", list(NODE_STATUSES)),
]


def test_every_enum_in_the_document_is_the_codes():
    used = set()
    for where, values in _enums(document()):
        matches = [i for i, (pattern, _) in enumerate(CODE) if re.search(pattern, where)]
        assert len(matches) == 1, f"{where}: {values} is tied to {len(matches)} of the code's vocabularies"
        assert values == CODE[matches[0]][1], where
        used.add(matches[0])
    assert used == set(range(len(CODE))), "a vocabulary above is no longer in the document"


def test_the_suppression_reasons_are_the_ones_the_rules_give_and_manual():
    """Suppression.reason is a description built from REASONS: the reasons relay.suppression.decide gives
    (for any kind of bounce, soft ones past the limit) and an operator's ``manual``."""
    given = {decide(Classification(kind, "r"), 99, 0.0, SuppressionPolicy()) for kind in Kind} - {None}
    assert {d.reason for d in given if d is not None} | {"manual"} == set(REASONS)
    reason = document()["components"]["schemas"]["Suppression"]["properties"]["reason"]
    assert reason["description"] == "hard_bounce, complaint, soft_bounces or manual"
