"""The OpenAPI 3.1 description of the v1 API, served at ``GET /v1/openapi.json``.

Written by hand next to the handlers; tests check that every route of the
running app is described here (and nothing else is), and fuzz the API from it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay import __version__
from relay.bounces.classify import Kind, Phase
from relay.domains import CHECKS, FAILED, KEY_STATES, PENDING, VERIFIED
from relay.events import ACCEPTED_STATES, EVENT_TYPES, STATS_INTERVALS, WOULD, State
from relay.keys import SCOPES
from relay.message import SOURCES
from relay.nodes import STATUSES as NODE_STATUSES
from relay.sandbox import FORMATS
from relay.store.idempotency import STATES as IDEMPOTENCY_STATES
from relay.store.queue import MAX_SEARCH_TEXT, RESEND_RESULTS, SUBJECT_SCAN
from relay.suppression import BOUNCE_SOURCES, REASONS

# The enums below come from the code (tests/test_openapi_enums.py checks every one), except the queue
# operation names: relay.api.queues imports relay.api.app, which imports this module.

_STR = {"type": "string"}
_TAG = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "description": "1-128 characters without commas, line breaks or control characters",
}
_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"], "minimum": 1}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_ADDRESS_ITEM = {"oneOf": [_STR, {"$ref": "#/components/schemas/Address"}]}
_ADDRESS = {
    **_ADDRESS_ITEM,
    "description": '"user@example.com", "Name <user@example.com>" or {"email": "user@example.com", "name": "Name"}',
}
_ADDRESSES = {
    "oneOf": [*_ADDRESS_ITEM["oneOf"], {"type": "array", "items": _ADDRESS_ITEM}],
    "description": '"user@example.com", "Name <user@example.com>", {"email": "user@example.com", "name": "Name"},'
    " or a list of those (at most [http] max_recipients, counted before any is parsed: too_many_recipients);"
    ' a string may also be a comma-separated list, "a@example.com, Name <b@example.com>" (quote a name that'
    ' holds a comma: "\\"Doe, Jo\\" <jo@example.com>")',
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Invalid request: a field, a query parameter, or the body is not strict JSON (NaN, Infinity, a number"
        " that overflows such as 1e400, nesting too deep, half a surrogate pair: invalid_json) or cannot be read"
        " in the Content-Encoding it names (invalid_body)",
        401: "Missing, unknown or revoked API key",
        402: "Sending quota exhausted",
        403: "Missing scope, IP not allowed, or TLS required",
        404: "Not found",
        405: "Method not allowed (see Allow)",
        409: "A request with this Idempotency-Key is in progress, or the resource already exists",
        413: "Body or message too large",
        415: "Body is not JSON",
        422: "Idempotency-Key reused with another body, every recipient suppressed, or the From: domain is not"
        " verified",
        429: "Rate limited (see Retry-After)",
        503: "Submission paused: queue or disk full, no room for the body under [server] max_inflight_bytes, or"
        " every template render process busy (see Retry-After)",
    }
    return {str(s): _json(_ref("Error"), text[s]) for s in (401, 403, 429, *statuses)}


_ID = {"name": "id", "in": "path", "required": True, "schema": _STR}

SCHEMAS: dict[str, Any] = {
    "Address": {
        "type": "object",
        "required": ["email"],
        "properties": {
            "email": {
                **_STR,
                "description": "the bare address: user@example.com (no control characters; local part"
                " at most 64 octets, the address at most 254)",
            },
            "name": {
                **_STR,
                "description": "the display name, as plain Unicode text: no RFC 2047 encoded words"
                " (=?...?=), line breaks or control characters",
            },
        },
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "request_id"],
                "properties": {"code": _STR, "message": _STR, "field": _STR, "request_id": _STR},
            }
        },
    },
    "Attachment": {
        "type": "object",
        "required": ["filename", "content"],
        "properties": {
            "filename": {**_STR, "description": "a plain name: no path, quote, line break or control character"},
            "content": {"type": "string", "contentEncoding": "base64"},
            "content_type": _STR,
            "content_id": {**_STR, "description": "makes the attachment inline, referenced as cid:<content_id>"},
        },
    },
    "MessageRequest": {
        "type": "object",
        "required": ["from", "to"],
        "description": "Give text, html or both, or template_id (and variables). Unknown fields are ignored.",
        "properties": {
            "from": _ADDRESS,
            "to": _ADDRESSES,
            "cc": _ADDRESSES,
            "bcc": _ADDRESSES,
            "reply_to": _ADDRESSES,
            "subject": {**_STR, "description": "one line: no line break or control character (a tab may stay)"},
            "text": _STR,
            "html": _STR,
            "headers": {
                "type": "object",
                "additionalProperties": _STR,
                "description": "extra headers; values are one line without control characters",
            },
            "attachments": {"type": "array", "items": _ref("Attachment")},
            "tags": {"type": "array", "items": _TAG, "maxItems": 10},
            "metadata": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]}},
            "send_at": {
                "type": ["string", "number", "null"],
                "description": "ISO 8601 time (or unix seconds) to send at; past: now",
            },
            "template_id": {
                **_NULLABLE_STR,
                "description": "render subject, html and text from this template (budgets"
                " per render: 1 s, 2 MB per part, 256 MB of memory; a failure is 400"
                " template_render_failed)",
            },
            "template_version": {"type": ["integer", "null"], "description": "a version of it (default: current)"},
            "variables": {"type": ["object", "null"], "description": "the template's variables"},
        },
    },
    "MessageAccepted": {
        "type": "object",
        "required": ["id", "status", "recipients"],
        "properties": {
            "id": _STR,
            "status": {"enum": [s.value for s in ACCEPTED_STATES]},
            "sandbox": {"type": "boolean", "description": "captured in the sandbox instead of delivered"},
            "send_at": _TIME,
            "recipients": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["email", "status"],
                    "properties": {
                        "email": _STR,
                        "status": {"enum": [*(s.value for s in ACCEPTED_STATES), State.SUPPRESSED.value]},
                        "reason": {**_STR, "description": "why a suppressed recipient is suppressed"},
                    },
                },
            },
        },
    },
    "Recipient": {
        "type": "object",
        "required": ["email", "status", "attempts"],
        "properties": {
            "email": _STR,
            "status": {"enum": [s.value for s in State]},
            "attempts": {"type": "integer"},
            "next_attempt_at": _TIME,
            "last_response": _NULLABLE_STR,
            "updated_at": _TIME,
        },
    },
    "Message": {
        "type": "object",
        "required": ["id", "created_at", "from", "recipients"],
        "properties": {
            "id": _STR,
            "created_at": _TIME,
            "source": {"enum": list(SOURCES)},
            "from": _STR,
            "subject": _STR,
            "size": {"type": "integer"},
            "tags": {"type": "array", "items": _STR},
            "metadata": {"type": "object"},
            "send_at": {**_TIME, "description": "when it was scheduled for; null: sent at once"},
            "recipients": {"type": "array", "items": _ref("Recipient")},
            "cancelled": {"type": "array", "items": _STR},
        },
    },
    "MessageList": {
        "type": "object",
        "required": ["data", "next_cursor"],
        "properties": {"data": {"type": "array", "items": _ref("Message")}, "next_cursor": _NULLABLE_STR},
    },
    "IdempotencyRecord": {
        "type": "object",
        "properties": {
            "key": _STR,
            "state": {"enum": list(IDEMPOTENCY_STATES)},
            "status": _NULLABLE_INT,
            "message_id": _NULLABLE_STR,
            "created_at": _TIME,
            "expires_at": _TIME,
            "deleted": {"type": "boolean", "description": "in the answer to DELETE only"},
        },
    },
    "Quota": {
        "type": "object",
        "required": ["limit", "used", "remaining", "period", "resets_at"],
        "properties": {
            "limit": {**_NULLABLE_INT, "description": "messages per period; null: no limit"},
            "used": {"type": ["integer", "null"], "description": "null: not counted (the key has no quota)"},
            "remaining": {"type": ["integer", "null"]},
            "period": {**_STR, "description": "2026-12-01 or 2026-12 (UTC)"},
            "resets_at": _TIME,
        },
    },
    "Quotas": {
        "type": "object",
        "required": ["api_key_id", "daily", "monthly"],
        "properties": {"api_key_id": _STR, "daily": _ref("Quota"), "monthly": _ref("Quota")},
    },
    "SmtpCredentialRequest": {
        "type": "object",
        "properties": {
            "allowed_from": {"type": "array", "items": {**_STR, "description": "domain or address"}},
            "rate_limit": {"type": "integer", "minimum": 1, "maximum": 10**12, "description": "messages per hour"},
            "tags": {"type": "array", "items": _TAG, "maxItems": 10},
        },
    },
    "SmtpCredential": {
        "type": "object",
        "required": ["id", "username", "password"],
        "properties": {
            "id": _STR,
            "username": _STR,
            "password": {**_STR, "description": "the password in the creation response only; masked elsewhere"},
            "allowed_from": {"type": "array", "items": _STR},
            "rate_limit": _NULLABLE_INT,
            "tags": {"type": "array", "items": _STR},
            "created_at": _TIME,
            "last_used_at": _TIME,
            "revoked_at": _TIME,
        },
    },
    "ApiKeyRequest": {
        "type": "object",
        "properties": {
            "name": _STR,
            "scopes": {"type": "array", "items": {"enum": list(SCOPES)}, "minItems": 1},
            "allowed_ips": {"type": "array", "items": {**_STR, "description": "CIDR"}},
            "rate_limit": {"type": "integer", "minimum": 1, "maximum": 10**12, "description": "requests per hour"},
            "daily_quota": {"type": "integer", "minimum": 1, "maximum": 10**12},
            "monthly_quota": {"type": "integer", "minimum": 1, "maximum": 10**12},
        },
    },
    "ApiKey": {
        "type": "object",
        "required": ["id", "name", "scopes"],
        "properties": {
            "id": _STR,
            "name": _STR,
            "scopes": {"type": "array", "items": _STR},
            "allowed_ips": {"type": "array", "items": _STR},
            "rate_limit": _NULLABLE_INT,
            "daily_quota": _NULLABLE_INT,
            "monthly_quota": _NULLABLE_INT,
            "created_at": _TIME,
            "last_used_at": _TIME,
            "revoked_at": _TIME,
            "key": {**_STR, "description": "the secret, in the creation response only"},
        },
    },
}

_IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Retries with the same key (per API key, within the TTL) replay the first response.",
}

PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "summary": "Liveness (no auth)",
            "security": [],
            "responses": {"200": _json({"type": "object"}, "Up")},
        }
    },
    "/v1/openapi.json": {
        "get": {"summary": "This document", "security": [], "responses": {"200": _json({"type": "object"}, "OK")}}
    },
    "/v1/scopes": {
        "get": {"summary": "The scopes an API key can have", "responses": {"200": _json({"type": "object"}, "OK")}}
    },
    "/v1/messages": {
        "post": {
            "summary": "Queue a message (scope send)",
            "parameters": [_IDEMPOTENCY_HEADER],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("MessageRequest")}}},
            "responses": {
                "202": _json(_ref("MessageAccepted"), "Queued durably"),
                **_errors(400, 402, 409, 413, 415, 422, 503),
            },
        },
        "get": {
            "summary": "List and search messages, newest first (scope read); every parameter given must match",
            "parameters": [
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                {
                    "name": "cursor",
                    "in": "query",
                    "description": "the next_cursor of a previous page (a message id); anything else is a 400",
                    "schema": {"type": "string", "pattern": "^[0-9a-hjkmnp-tv-z]{26}$"},
                },
                {"name": "status", "in": "query", "schema": _STR},
                {"name": "recipient", "in": "query", "schema": _STR},
                {"name": "tag", "in": "query", "schema": _STR},
                {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                {"name": "until", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                {
                    "name": "sender",
                    "in": "query",
                    "description": "The envelope sender: an address (its messages, compared ignoring case) or a"
                    " domain name (every sender address of that domain)",
                    "schema": {**_STR, "maxLength": MAX_SEARCH_TEXT},
                },
                {
                    "name": "subject",
                    "in": "query",
                    "description": "The subject contains this text, ignoring case (ASCII letters on SQLite). A"
                    f" search with a subject examines at most {SUBJECT_SCAN:,} messages (of those the other"
                    " parameters select) per request: a page may then be short, or empty, with a next_cursor"
                    " to go on with; the listing ends when next_cursor is null",
                    "schema": {**_STR, "maxLength": MAX_SEARCH_TEXT},
                },
                {
                    "name": "message_id",
                    "in": "query",
                    "description": "relay's message id, or the Message-ID header (with or without its angle brackets)",
                    "schema": {**_STR, "maxLength": MAX_SEARCH_TEXT},
                },
            ],
            "responses": {"200": _json(_ref("MessageList"), "A page"), **_errors(400)},
        },
    },
    "/v1/messages/{id}": {
        "get": {
            "summary": "A message and its recipients (scope read)",
            "parameters": [_ID],
            "responses": {"200": _json(_ref("Message"), "The message"), **_errors(404)},
        },
        "delete": {
            "summary": "Cancel the recipients not yet delivered (scope send)",
            "parameters": [_ID],
            "responses": {"200": _json(_ref("Message"), "What was cancelled"), **_errors(404)},
        },
    },
    "/v1/idempotency/records/{key}": {
        "get": {
            "summary": "An Idempotency-Key record of the calling API key (scope send)",
            "parameters": [{"name": "key", "in": "path", "required": True, "schema": _STR}],
            "responses": {"200": _json(_ref("IdempotencyRecord"), "The record"), **_errors(404)},
        },
        "delete": {
            "summary": "Delete an Idempotency-Key record of the calling API key, so the key may be used for a new"
            " request (scope send)",
            "parameters": [{"name": "key", "in": "path", "required": True, "schema": _STR}],
            "responses": {
                "200": _json(_ref("IdempotencyRecord"), "The deleted record, with deleted: true"),
                **_errors(404, 409),
            },
        },
    },
    "/v1/quotas": {
        "get": {
            "summary": "The calling API key's sending quotas: limits and use this UTC day and month (any scope)",
            "responses": {"200": _json(_ref("Quotas"), "OK")},
        }
    },
    "/v1/api-keys": {
        "post": {
            "summary": "Create an API key; the secret is in this response only (scope admin)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ApiKeyRequest")}}},
            "responses": {"201": _json(_ref("ApiKey"), "Created"), **_errors(400, 415)},
        },
        "get": {
            "summary": "List API keys (scope admin)",
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"data": {"type": "array", "items": _ref("ApiKey")}}}, "OK"
                )
            },
        },
    },
    "/v1/api-keys/{id}": {
        "get": {
            "summary": "One API key (scope admin)",
            "parameters": [_ID],
            "responses": {"200": _json(_ref("ApiKey"), "The key"), **_errors(404)},
        },
        "delete": {
            "summary": "Revoke an API key at once (scope admin)",
            "parameters": [_ID],
            "responses": {"200": _json(_ref("ApiKey"), "Revoked"), **_errors(404)},
        },
    },
}


PATHS["/v1/smtp-credentials"] = {
    "post": {
        "summary": "Create SMTP credentials; the password is in this response only (scope admin)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SmtpCredentialRequest")}}},
        "responses": {"201": _json(_ref("SmtpCredential"), "Created"), **_errors(400, 415)},
    },
    "get": {
        "summary": "List SMTP credentials, passwords masked (scope admin)",
        "responses": {
            "200": _json(
                {"type": "object", "properties": {"data": {"type": "array", "items": _ref("SmtpCredential")}}}, "OK"
            )
        },
    },
}
PATHS["/v1/smtp-credentials/{id}"] = {
    "get": {
        "summary": "One SMTP credential (scope admin)",
        "parameters": [_ID],
        "responses": {"200": _json(_ref("SmtpCredential"), "The credential"), **_errors(404)},
    },
    "delete": {
        "summary": "Revoke SMTP credentials at once (scope admin)",
        "parameters": [_ID],
        "responses": {"200": _json(_ref("SmtpCredential"), "Revoked"), **_errors(404)},
    },
}


_DOMAIN = {
    "name": "domain",
    "in": "path",
    "required": True,
    "schema": {**_STR, "not": {"enum": ["scheduled", "resend"]}},  # relay.api.queues.OPERATIONS
    "description": "a destination domain ('scheduled' and 'resend' name operations instead)",
}
_REASON_BODY = {
    "required": False,
    "content": {"application/json": {"schema": {"type": "object", "properties": {"reason": _STR}}}},
}
SCHEMAS["SendingQueue"] = {
    "type": "object",
    "required": ["domain", "pending", "deferred", "in_flight", "scheduled"],
    "properties": {
        "domain": _STR,
        "pending": {"type": "integer"},
        "deferred": {"type": "integer"},
        "in_flight": {"type": "integer"},
        "scheduled": {"type": "integer", "description": "deferred and not due yet"},
        "oldest_at": _TIME,
        "suspended_until": _TIME,
    },
}
_QUEUE_ACTION = _json({"type": "object", "properties": {"domain": _STR}}, "Done")
PATHS["/v1/sending-queues"] = {
    "get": {
        "summary": "Recipients waiting, by destination domain (scope admin)",
        "responses": {
            "200": _json(
                {
                    "type": "object",
                    "required": ["data", "totals"],
                    "properties": {
                        "data": {"type": "array", "items": _ref("SendingQueue")},
                        "totals": {"type": "object"},
                    },
                },
                "OK",
            ),
        },
    }
}
PATHS["/v1/sending-queues/{domain}/retry"] = {
    "post": {
        "summary": "Make the domain's waiting recipients due now (scope admin)",
        "parameters": [_DOMAIN],
        "responses": {"200": _QUEUE_ACTION, **_errors(404, 405)},
    }
}
PATHS["/v1/sending-queues/{domain}/suspend"] = {
    "post": {
        "summary": "Hold the domain's recipients (not attempted, not expired) for a while (scope admin)",
        "parameters": [_DOMAIN],
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "duration": {**_STR, "description": 'e.g. "30m" (default "1h")'},
                            "reason": _STR,
                        },
                    }
                }
            },
        },
        "responses": {"200": _QUEUE_ACTION, **_errors(400, 404, 405, 415)},
    }
}
PATHS["/v1/sending-queues/{domain}/resume"] = {
    "post": {
        "summary": "End a suspension (scope admin)",
        "parameters": [_DOMAIN],
        "responses": {"200": _QUEUE_ACTION, **_errors(404, 405)},
    }
}
PATHS["/v1/sending-queues/{domain}/bounce"] = {
    "post": {
        "summary": "Bounce the domain's waiting recipients (scope admin)",
        "parameters": [_DOMAIN],
        "requestBody": _REASON_BODY,
        "responses": {"200": _QUEUE_ACTION, **_errors(400, 404, 405, 415)},
    }
}
PATHS["/v1/sending-queues/{domain}"] = {
    "delete": {
        "summary": "Purge the domain's waiting recipients from the queue, without bounces (scope admin)",
        "parameters": [_DOMAIN],
        "responses": {"200": _QUEUE_ACTION, **_errors(404, 405)},
    }
}
PATHS["/v1/sending-queues/scheduled"] = {
    "delete": {
        "summary": "Cancel every scheduled message not yet due; its recipients end cancelled (scope admin)",
        "responses": {
            "200": _json(
                {
                    "type": "object",
                    "required": ["queue", "cancelled_messages", "cancelled_recipients"],
                    "properties": {
                        "queue": {"const": "scheduled"},
                        "cancelled_messages": {"type": "integer"},
                        "cancelled_recipients": {"type": "integer"},
                    },
                },
                "Done",
            )
        },
    }
}
SCHEMAS["Resend"] = {
    "type": "object",
    "required": ["message_id", "queued", "recipients"],
    "properties": {
        "message_id": _STR,
        "queued": {"type": "integer", "description": "recipients queued again"},
        "recipients": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["email", "previous_status", "result"],
                "properties": {
                    "email": _STR,
                    "previous_status": _STR,
                    "result": {"enum": list(RESEND_RESULTS)},
                    "reason": {**_STR, "description": "why a recipient stays suppressed"},
                },
            },
        },
    },
}
PATHS["/v1/sending-queues/resend"] = {
    "post": {
        "summary": "Queue a message's bounced and failed recipients again, unless suppressed now (scope admin)",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "required": ["message_id"], "properties": {"message_id": _STR}}
                }
            },
        },
        "responses": {"200": _json(_ref("Resend"), "What happened to each recipient"), **_errors(400, 404, 409, 415)},
    }
}
PATHS["/v1/messages/{id}/retry"] = {
    "post": {
        "summary": "Make a message's waiting recipients due now (scope admin)",
        "parameters": [_ID],
        "responses": {"200": _json({"type": "object"}, "Done"), **_errors(404)},
    }
}

# -- suppressions, allowlist, bounces -------------------------------------------------

SCHEMAS["Suppression"] = {
    "type": "object",
    "required": ["email", "reason", "created_at"],
    "properties": {
        "email": {**_STR, "description": "normalised: lower case, IDNA domain"},
        "reason": {**_STR, "description": f"{', '.join(REASONS[:-1])} or {REASONS[-1]}"},
        "detail": _STR,
        "bounce_id": {"type": ["integer", "null"]},
        "message_id": _NULLABLE_STR,
        "created_at": _TIME,
        "expires_at": {**_TIME, "description": "null: until removed"},
    },
}
_BOUNCE_KINDS = [k.value for k in Kind]
SCHEMAS["Bounce"] = {
    "type": "object",
    "required": ["id", "at", "email", "type", "reason", "source"],
    "properties": {
        "id": {"type": "integer"},
        "at": _TIME,
        "email": _STR,
        "type": {"enum": _BOUNCE_KINDS},
        "reason": _STR,
        "code": {"type": ["integer", "null"]},
        "status": {**_NULLABLE_STR, "description": "enhanced status code, e.g. 5.1.1"},
        "diagnostic": _STR,
        "remote_mta": _NULLABLE_STR,
        "source": {"enum": list(BOUNCE_SOURCES)},
        "phase": {
            "enum": [*(p.value for p in Phase), None],
            "description": "the SMTP command a refusal during delivery answered (null: a returned report or unknown)",
        },
        "message_id": _NULLABLE_STR,
        "report": {**_NULLABLE_STR, "description": "the returned report as received (GET /v1/bounces/{id} only)"},
    },
}
_PAGE_PARAMS = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    {"name": "cursor", "in": "query", "schema": _STR},
]
_EMAIL = {"name": "email", "in": "path", "required": True, "schema": _STR}


def _page_of(name: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"type": "array", "items": _ref(name)}, "next_cursor": _NULLABLE_STR},
    }
    return _json(schema, "A page, in order")


PATHS["/v1/suppressions"] = {
    "get": {
        "summary": "Suppressed addresses, by address (scope suppressions)",
        "parameters": [
            *_PAGE_PARAMS,
            *({"name": n, "in": "query", "schema": _STR} for n in ("reason", "search", "since", "until")),
        ],
        "responses": {"200": _page_of("Suppression"), **_errors(400)},
    },
    "post": {
        "summary": "Suppress addresses by hand (scope suppressions)",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "email": _STR,
                            "emails": {"type": "array", "items": _STR, "maxItems": 1000},
                            "note": _STR,
                        },
                    }
                }
            },
        },
        "responses": {"201": _page_of("Suppression"), **_errors(400, 415)},
    },
}
PATHS["/v1/suppressions/{email}"] = {
    "get": {
        "summary": "One suppression (scope suppressions)",
        "parameters": [_EMAIL],
        "responses": {"200": _json(_ref("Suppression"), "OK"), **_errors(404)},
    },
    "delete": {
        "summary": "Reactivate an address (scope suppressions)",
        "parameters": [_EMAIL],
        "responses": {"200": _json({"type": "object"}, "Removed"), **_errors(404)},
    },
}
PATHS["/v1/allowlist"] = {
    "get": {
        "summary": "Addresses and domains that suppression never applies to (scope suppressions)",
        "responses": {"200": _json({"type": "object"}, "OK")},
    },
    "post": {
        "summary": "Allow an address or a whole domain (scope suppressions)",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "required": ["entry"], "properties": {"entry": _STR, "note": _STR}}
                }
            },
        },
        "responses": {"201": _json({"type": "object"}, "Added"), **_errors(400, 415)},
    },
}
PATHS["/v1/allowlist/{entry}"] = {
    "delete": {
        "summary": "Remove an allowlist entry (scope suppressions)",
        "parameters": [{"name": "entry", "in": "path", "required": True, "schema": _STR}],
        "responses": {"200": _json({"type": "object"}, "Removed"), **_errors(404)},
    }
}
PATHS["/v1/bounces"] = {
    "get": {
        "summary": "Bounces, newest first (scope suppressions)",
        "parameters": [
            *_PAGE_PARAMS,
            {
                "name": "kind",
                "in": "query",
                "schema": {"enum": _BOUNCE_KINDS},
                "description": f"{', '.join(_BOUNCE_KINDS[:-1])} or {_BOUNCE_KINDS[-1]} (also accepted as type)",
            },
            {"name": "type", "in": "query", "schema": {"enum": _BOUNCE_KINDS}, "description": "same as kind"},
            {"name": "recipient", "in": "query", "schema": _STR, "description": "the address (also accepted as email)"},
            {"name": "email", "in": "query", "schema": _STR, "description": "same as recipient"},
            {"name": "message_id", "in": "query", "schema": _STR},
        ],
        "responses": {"200": _page_of("Bounce"), **_errors(400)},
    }
}
PATHS["/v1/bounces/{id}"] = {
    "get": {
        "summary": "One bounce with the report as received (scope suppressions)",
        "parameters": [_ID],
        "responses": {"200": _json(_ref("Bounce"), "OK"), **_errors(404)},
    }
}


# -- events, stats, webhooks, metrics --------------------------------------------------

_EVENT_TYPES = list(EVENT_TYPES)
SCHEMAS["Event"] = {
    "type": "object",
    "required": ["id", "type", "timestamp", "message_id"],
    "properties": {
        "id": {**_STR, "description": "evt_<n>; also the webhook-id of its webhook deliveries"},
        "type": {"enum": _EVENT_TYPES},
        "timestamp": _TIME,
        "message_id": _STR,
        "recipient": _NULLABLE_STR,
        "tags": {"type": "array", "items": _STR},
        "metadata": {"type": "object"},
        "details": {
            "type": "object",
            "description": "attempt, mx_host, ip, tls, smtp_code, enhanced_status, response, classification, reason,"
            " next_attempt_at, send_at (what applies; times in ISO 8601), description",
        },
    },
}
SCHEMAS["Webhook"] = {
    "type": "object",
    "required": ["id", "url", "events", "enabled"],
    "properties": {
        "id": _STR,
        "url": _STR,
        "events": {"type": "array", "items": {"enum": _EVENT_TYPES}, "description": "empty: every type"},
        "enabled": {"type": "boolean"},
        "description": _STR,
        "created_at": _TIME,
        "updated_at": _TIME,
        "failing_since": _TIME,
        "disabled_reason": _NULLABLE_STR,
        "pending_deliveries": {"type": "integer"},
        "secret": {**_STR, "description": "whsec_...: in the responses to create and rotate-secret only"},
    },
}
_WEBHOOK_BODY = {
    "type": "object",
    "properties": {
        "url": _STR,
        "events": {"type": ["array", "null"], "items": {"enum": _EVENT_TYPES}},
        "enabled": {"type": "boolean"},
        "description": _STR,
    },
}
_TIME_PARAMS = [{"name": n, "in": "query", "schema": _STR} for n in ("from", "to")]
PATHS["/v1/events"] = {
    "get": {
        "summary": "Events, newest first (scope read)",
        "parameters": [
            *_PAGE_PARAMS,
            *(
                {"name": n, "in": "query", "schema": _STR}
                for n in ("type", "recipient", "tag", "message_id", "since", "until")
            ),
        ],
        "responses": {"200": _page_of("Event"), **_errors(400)},
    }
}
PATHS["/v1/messages/{id}/events"] = {
    "get": {
        "summary": "A message's events, oldest first (scope read)",
        "parameters": [_ID],
        "responses": {"200": _page_of("Event"), **_errors(404)},
    }
}
PATHS["/v1/stats"] = {
    "get": {
        "summary": "Event counts per type per hour or day (scope read)",
        "parameters": [
            *_TIME_PARAMS,
            {"name": "interval", "in": "query", "schema": {"enum": list(STATS_INTERVALS)}},
            {"name": "tag", "in": "query", "schema": _STR},
        ],
        "responses": {"200": _json({"type": "object"}, "totals and data: [{start, counts}]"), **_errors(400)},
    }
}
PATHS["/v1/stats/bounces"] = {
    "get": {
        "summary": "Bounces by classification and reason, and by recipient domain (scope read)",
        "parameters": _TIME_PARAMS,
        "responses": {"200": _json({"type": "object"}, "total, by_classification, by_domain"), **_errors(400)},
    }
}
_COUNTS = {
    "type": "object",
    "required": ["delivered", "deferred", "bounced", "complained"],
    "properties": {k: {"type": "integer", "minimum": 0} for k in ("delivered", "deferred", "bounced", "complained")},
}


def _series(interval: str, buckets: int) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["interval", "data"],
        "properties": {
            "interval": {"const": interval},
            "data": {
                "type": "array",
                "minItems": buckets,
                "maxItems": buckets,
                "items": {
                    "type": "object",
                    "required": ["start", "counts"],
                    "properties": {"start": {"type": "string", "format": "date-time"}, "counts": _COUNTS},
                },
            },
        },
    }


SCHEMAS["Overview"] = {
    "type": "object",
    "required": [
        "at",
        "recipients",
        "waiting",
        "last_24_hours",
        "last_30_days",
        "deferral_reasons",
        "destinations",
    ],
    "properties": {
        "at": {"type": "string", "format": "date-time"},
        "recipients": {
            "type": "object",
            "description": "Recipients in each state now (every state, 0 included)",
            "required": [s.value for s in State],
            "additionalProperties": {"type": "integer", "minimum": 0},
        },
        "waiting": {"type": "integer", "minimum": 0, "description": "queued + scheduled + deferred + sending"},
        "last_24_hours": {**_series("hour", 24), "description": "Per hour (UTC), the current hour last"},
        "last_30_days": {**_series("day", 30), "description": "Per day (UTC), today last"},
        "deferral_reasons": {
            "type": "object",
            "description": "The most frequent reasons of the deferrals over [from, to) (whole hours): replies"
            " with what varies per message (addresses, IPs, queue ids, numbers, times) taken out",
            "required": ["from", "to", "data"],
            "properties": {
                "from": {"type": "string", "format": "date-time"},
                "to": {"type": "string", "format": "date-time"},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["reason", "count", "example", "last_at"],
                        "properties": {
                            "reason": _STR,
                            "count": {"type": "integer", "minimum": 1},
                            "example": {**_STR, "description": "One of the replies, as received"},
                            "last_at": {"type": "string", "format": "date-time"},
                        },
                    },
                },
            },
        },
        "destinations": {
            "type": "array",
            "description": "Recipient domains with the most mail waiting (queued, deferred or being sent) first",
            "items": {
                "type": "object",
                "required": ["domain", "waiting", "queued", "deferred", "sending", "oldest", "suspended_until"],
                "properties": {
                    "domain": _STR,
                    **{k: {"type": "integer", "minimum": 0} for k in ("waiting", "queued", "deferred", "sending")},
                    "oldest": {**_TIME, "description": "When the oldest message still waiting was accepted"},
                    "suspended_until": _TIME,
                },
            },
        },
    },
}
PATHS["/v1/stats/overview"] = {
    "get": {
        "summary": "The dashboard's overview: recipients by state, outcomes per hour and per day, top deferral"
        " reasons, destinations by waiting mail (scope read)",
        "parameters": [
            {**_TIME_PARAMS[0], "description": "Start of the deferral reasons' window (default: 24 hours before to)"},
            {**_TIME_PARAMS[1], "description": "End of the deferral reasons' window (default: now)"},
            {
                "name": "limit",
                "in": "query",
                "description": "Entries of each top list (default 10)",
                "schema": {"type": "integer", "minimum": 1, "maximum": 100},
            },
        ],
        "responses": {"200": _json(_ref("Overview"), "The figures"), **_errors(400, 403)},
    }
}
PATHS["/v1/webhooks"] = {
    "get": {"summary": "Webhook endpoints (scope webhooks)", "responses": {"200": _page_of("Webhook")}},
    "post": {
        "summary": "Add an endpoint; the response carries its signing secret (scope webhooks)",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {**_WEBHOOK_BODY, "required": ["url"]}}},
        },
        "responses": {"201": _json(_ref("Webhook"), "Created"), **_errors(400, 415)},
    },
}
PATHS["/v1/webhooks/{id}"] = {
    "get": {
        "summary": "One endpoint (scope webhooks)",
        "parameters": [_ID],
        "responses": {"200": _json(_ref("Webhook"), "OK"), **_errors(404)},
    },
    "put": {
        "summary": "Change an endpoint; enabling it again clears its failure record (scope webhooks)",
        "parameters": [_ID],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _WEBHOOK_BODY}}},
        "responses": {"200": _json(_ref("Webhook"), "OK"), **_errors(400, 404, 415)},
    },
    "patch": {
        "summary": "Same as PUT (scope webhooks)",
        "parameters": [_ID],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _WEBHOOK_BODY}}},
        "responses": {"200": _json(_ref("Webhook"), "OK"), **_errors(400, 404, 415)},
    },
    "delete": {
        "summary": "Remove an endpoint and its pending deliveries (scope webhooks)",
        "parameters": [_ID],
        "responses": {"200": _json({"type": "object"}, "Deleted"), **_errors(404)},
    },
}
PATHS["/v1/webhooks/{id}/rotate-secret"] = {
    "post": {
        "summary": "A new signing secret, in force at once (scope webhooks)",
        "parameters": [_ID],
        "responses": {"200": _json(_ref("Webhook"), "With the new secret"), **_errors(404)},
    },
}
PATHS["/v1/webhooks/{id}/test"] = {
    "post": {
        "summary": "Send a sample event now; status code and latency (scope webhooks)",
        "parameters": [_ID],
        "responses": {"200": _json({"type": "object"}, "ok, status_code, error, latency_ms"), **_errors(404)},
    },
}
PATHS["/v1/webhooks/{id}/deliveries"] = {
    "get": {
        "summary": "Recent attempts, newest first (scope webhooks)",
        "parameters": [_ID, *_PAGE_PARAMS],
        "responses": {"200": _json({"type": "object"}, "A page of attempts"), **_errors(400, 404)},
    },
}
PATHS["/metrics"] = {
    "get": {
        "summary": "Prometheus metrics (no API key; [http] metrics_networks only)",
        "security": [],
        "responses": {
            "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": _STR}}},
            "403": _json({"type": "object"}, "Not allowed from this address"),
        },
    }
}


# -- sending domains ------------------------------------------------------------------------------

_DOMAIN_STATUSES = [VERIFIED, PENDING, FAILED]
_CHECK = {"type": "object", "properties": {"status": {"enum": _DOMAIN_STATUSES}, "hint": _STR}}
SCHEMAS["Domain"] = {
    "type": "object",
    "required": ["id", "domain", "status", "records"],
    "properties": {
        "id": _STR,
        "domain": _STR,
        "status": {"enum": _DOMAIN_STATUSES, "description": "verified: DKIM and SPF are right"},
        "created_at": _TIME,
        "checked_at": _TIME,
        "verified_at": _TIME,
        "dkim": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"selector": _STR, "state": {"enum": list(KEY_STATES)}, "created_at": _TIME},
            },
        },
        "records": {
            "type": "array",
            "items": {"type": "object", "properties": {"type": _STR, "name": _STR, "value": _STR, "purpose": _STR}},
        },
        "outbound": {
            "type": "object",
            "properties": {"ips": {"type": "array", "items": _STR}, "note": _STR},
            "description": "the addresses the SPF record authorises, and how relay knows them or why not",
        },
        "checks": {
            "type": ["object", "null"],
            "additionalProperties": _CHECK,
            "description": f"{', '.join(CHECKS)} (and dkim_next during a rotation)",
        },
    },
}
PATHS["/v1/domains"] = {
    "get": {"summary": "Sending domains (scope domains)", "responses": {"200": _page_of("Domain")}},
    "post": {
        "summary": "Add a domain: makes its DKIM key and lists the records to publish (scope domains)",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "required": ["domain"], "properties": {"domain": _STR}}
                }
            },
        },
        "responses": {"201": _json(_ref("Domain"), "Created"), **_errors(400, 409, 415)},
    },
}
_DOMAIN_ID = {**_ID, "description": "the id or the domain name"}
PATHS["/v1/domains/{id}"] = {
    "get": {
        "summary": "One domain (scope domains)",
        "parameters": [_DOMAIN_ID],
        "responses": {"200": _json(_ref("Domain"), "OK"), **_errors(404)},
    },
    "delete": {
        "summary": "Remove a domain and delete its keys (scope domains)",
        "parameters": [_DOMAIN_ID],
        "responses": {"200": _json({"type": "object"}, "Deleted"), **_errors(404)},
    },
}
_VERIFY = {
    "summary": "Check the published records now; the result is stored (scope domains)",
    "parameters": [_DOMAIN_ID],
    "responses": {"200": _json(_ref("Domain"), "With checks"), **_errors(404)},
}
PATHS["/v1/domains/{id}/verify"] = {"get": {**_VERIFY}, "post": {**_VERIFY}}  # each gets its own operationId
PATHS["/v1/domains/{id}/rotate-dkim"] = {
    "post": {
        "summary": "A new DKIM key to publish next to the current one; it signs once verify sees it (scope domains)",
        "parameters": [_DOMAIN_ID],
        "responses": {"200": _json(_ref("Domain"), "With the pending key"), **_errors(404, 409)},
    },
}


# -- scheduled messages ------------------------------------------------------------------------------

PATHS["/v1/scheduled-messages"] = {
    "get": {
        "summary": "Messages waiting for their send_at, soonest first (scope read)",
        "parameters": _PAGE_PARAMS,
        "responses": {"200": _json(_ref("MessageList"), "A page"), **_errors(400)},
    },
}
PATHS["/v1/scheduled-messages/{id}"] = {
    "get": {
        "summary": "A message waiting for its send_at (scope read); 404 once sent or cancelled",
        "parameters": [_ID],
        "responses": {"200": _json(_ref("Message"), "The message"), **_errors(404)},
    },
    "patch": {
        "summary": "Move a scheduled message to another time in the future (scope send)",
        "parameters": [_ID],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "required": ["send_at"], "properties": {"send_at": _STR}}
                }
            },
        },
        "responses": {"200": _json(_ref("Message"), "The message"), **_errors(400, 404, 409, 415)},
    },
    "delete": {
        "summary": "Cancel a scheduled message (scope send)",
        "parameters": [_ID],
        "responses": {"200": _json(_ref("Message"), "Cancelled (the addresses in cancelled)"), **_errors(404)},
    },
}


# -- templates -----------------------------------------------------------------------------------------

SCHEMAS["Template"] = {
    "type": "object",
    "required": ["id", "name", "version"],
    "properties": {
        "id": _STR,
        "name": _STR,
        "version": {"type": "integer"},
        "subject": _STR,
        "html": _NULLABLE_STR,
        "text": _NULLABLE_STR,
        "note": _STR,
        "created_at": _TIME,
        "updated_at": _TIME,
    },
}
_TEMPLATE_BODY = {
    "type": "object",
    "properties": {"name": _STR, "subject": _STR, "html": _NULLABLE_STR, "text": _NULLABLE_STR},
}
_VERSION_PARAM = {"name": "version", "in": "path", "required": True, "schema": _STR}
PATHS["/v1/templates"] = {
    "get": {"summary": "Templates, current versions (scope templates)", "responses": {"200": _page_of("Template")}},
    "post": {
        "summary": "Create a template, version 1 (scope templates)",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {**_TEMPLATE_BODY, "required": ["name"]}}},
        },
        "responses": {"201": _json(_ref("Template"), "Created"), **_errors(400, 415)},
    },
}
PATHS["/v1/templates/validate"] = {
    "post": {
        "summary": "Syntax errors with line numbers, nothing saved (scope templates)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _TEMPLATE_BODY}}},
        "responses": {"200": _json({"type": "object"}, "valid, errors [{field, line, message}]"), **_errors(400, 415)},
    },
}
PATHS["/v1/templates/{id}"] = {
    "get": {
        "summary": "A template at its current version (scope templates)",
        "parameters": [_ID],
        "responses": {"200": _json(_ref("Template"), "OK"), **_errors(404)},
    },
    "put": {
        "summary": "A new version; fields left out keep their value (scope templates)",
        "parameters": [_ID],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _TEMPLATE_BODY}}},
        "responses": {"200": _json(_ref("Template"), "OK"), **_errors(400, 404, 415)},
    },
    "delete": {
        "summary": "Delete a template and its versions (scope templates)",
        "parameters": [_ID],
        "responses": {"200": _json({"type": "object"}, "Deleted"), **_errors(404)},
    },
}
PATHS["/v1/templates/{id}/versions"] = {
    "get": {
        "summary": "Every version, newest first (scope templates)",
        "parameters": [_ID],
        "responses": {"200": _json({"type": "object"}, "current and data"), **_errors(404)},
    },
}
PATHS["/v1/templates/{id}/versions/{version}"] = {
    "get": {
        "summary": "One version (scope templates)",
        "parameters": [_ID, _VERSION_PARAM],
        "responses": {"200": _json({"type": "object"}, "OK"), **_errors(404)},
    },
}
PATHS["/v1/templates/{id}/versions/{version}/rollback"] = {
    "post": {
        "summary": "Make a version current again, as a new version (scope templates)",
        "parameters": [_ID, _VERSION_PARAM],
        "responses": {"200": _json(_ref("Template"), "OK"), **_errors(404)},
    },
}
PATHS["/v1/templates/{id}/preview"] = {
    "post": {
        "summary": "Render with variables (scope templates)",
        "parameters": [_ID],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"variables": {"type": "object"}, "version": {"type": ["integer", "null"]}},
                    }
                }
            },
        },
        "responses": {"200": _json({"type": "object"}, "subject, html, text"), **_errors(400, 404, 415, 503)},
    },
}


# -- batch sending -----------------------------------------------------------------------------------

PATHS["/v1/messages/batch"] = {
    "post": {
        "summary": "Up to [http] max_batch messages, or one message personalised per recipient (scope send)",
        "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": _STR}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "messages": {"type": "array", "items": _ref("MessageRequest"), "maxItems": 500},
                            "message": {"type": "object", "description": "the base of a personalised batch"},
                            "recipients": {
                                "type": "array",
                                "maxItems": 500,
                                "items": {
                                    "type": "object",
                                    "required": ["to"],
                                    "properties": {"to": _ADDRESSES, "variables": {"type": "object"}},
                                },
                            },
                            "atomic": {"type": "boolean"},
                        },
                    }
                }
            },
        },
        "responses": {
            "202": _json({"type": "object"}, "queued, failed, results per index"),
            **_errors(400, 402, 409, 415, 422, 503),
        },
    }
}


# -- sandbox: test keys and credentials, captured messages, dry runs ------------------------------------

_TEST_FLAG = {"type": "boolean", "description": "a test key or credential: what it sends is captured, not delivered"}
for _name in ("ApiKeyRequest", "ApiKey", "SmtpCredentialRequest", "SmtpCredential"):
    SCHEMAS[_name]["properties"]["test"] = _TEST_FLAG
for _name in ("ApiKeyRequest", "ApiKey"):
    SCHEMAS[_name]["properties"]["own_messages"] = {
        "type": "boolean",
        "description": "the key reads only the messages it sent (and their events), and no instance-wide stats",
    }
SCHEMAS["Message"]["properties"]["sandbox"] = {
    "type": "boolean",
    "description": "captured instead of delivered (sandbox mode or a test key/credential at acceptance)",
}
SCHEMAS["DryRun"] = {
    "type": "object",
    "required": ["dry_run", "status", "sandbox", "recipients"],
    "properties": {
        "dry_run": {"const": True},
        "status": {"enum": list(WOULD.values())},
        "send_at": _TIME,
        "sandbox": {"type": "boolean", "description": "would be captured rather than delivered"},
        "dkim": {"type": "boolean", "description": "would be DKIM-signed"},
        "size": {"type": "integer"},
        "recipients": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["email", "status"],
                "properties": {
                    "email": _STR,
                    "status": {"enum": [*WOULD.values(), State.SUPPRESSED.value]},
                    "reason": _STR,
                },
            },
        },
    },
}
PATHS["/v1/messages"]["post"]["parameters"].append(
    {
        "name": "dry_run",
        "in": "query",
        "schema": {"type": "boolean"},
        "description": "run every check and answer 200 with what would happen; nothing is queued or recorded",
    }
)
PATHS["/v1/messages"]["post"]["responses"]["200"] = _json(_ref("DryRun"), "dry_run=true: what would happen")
SCHEMAS["SandboxMessage"] = {
    "type": "object",
    "required": ["id", "envelope", "headers", "attachments", "body_deleted"],
    "properties": {
        **SCHEMAS["Message"]["properties"],
        "envelope": {"type": "object", "properties": {"from": _STR, "to": {"type": "array", "items": _STR}}},
        "headers": {"type": "array", "items": {"type": "object", "properties": {"name": _STR, "value": _STR}}},
        "text": _NULLABLE_STR,
        "html": _NULLABLE_STR,
        "attachments": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "filename": _NULLABLE_STR,
                    "content_type": _STR,
                    "size": {"type": "integer"},
                    "content_id": _NULLABLE_STR,
                },
            },
        },
        "body_deleted": {"type": "boolean", "description": "[retention] bodies has deleted the body"},
    },
}
SCHEMAS["Node"] = {
    "type": "object",
    "required": ["id", "host", "version", "pid", "status", "started_at", "heartbeat_at", "stopped_at"],
    "properties": {
        "id": {**_STR, "description": "owns this node's delivery leases (node-id in its data directory)"},
        "host": {**_STR, "description": "the machine's host name"},
        "version": _STR,
        "pid": {"type": "integer"},
        "status": {
            "enum": list(NODE_STATUSES),
            "description": "up: beating; silent: three beats missed (its leases return after [delivery] lease);"
            " stopped: it said so",
        },
        "started_at": _TIME,
        "heartbeat_at": _TIME,
        "stopped_at": _TIME,
    },
}
PATHS["/v1/nodes"] = {
    "get": {
        "summary": "The nodes serving this store, newest start first (scope admin)",
        "responses": {
            "200": _json({"type": "object", "properties": {"data": {"type": "array", "items": _ref("Node")}}}, "OK")
        },
    },
}
PATHS["/v1/sandbox/messages"] = {
    "get": {
        "summary": "Messages captured instead of delivered, newest first (scope read)",
        "parameters": PATHS["/v1/messages"]["get"]["parameters"][:2],  # limit (1-100), cursor
        "responses": {"200": _json(_ref("MessageList"), "A page"), **_errors(400)},
    },
}
PATHS["/v1/sandbox/messages/{id}"] = {
    "get": {
        "summary": "A captured message: envelope, rendered headers, text, html, attachments (scope read)",
        "parameters": [
            _ID,
            {
                "name": "format",
                "in": "query",
                "schema": {"enum": list(FORMATS)},
                "description": "raw: the RFC 5322 message, as /raw gives it",
            },
        ],
        "responses": {
            "200": {
                "description": "The message",
                "content": {"application/json": {"schema": _ref("SandboxMessage")}, "message/rfc822": {"schema": _STR}},
            },
            **_errors(400, 404),
        },
    },
}
PATHS["/v1/sandbox/messages/{id}/raw"] = {
    "get": {
        "summary": "A captured message as stored, RFC 5322 (scope read)",
        "parameters": [_ID],
        "responses": {
            "200": {"description": "The message", "content": {"message/rfc822": {"schema": _STR}}},
            **_errors(404),
        },
    },
}


# Stable names for generated clients (send_message, not post_v1_messages), and the group each goes in.
# Every operation needs one: tests/test_openapi.py checks it.
OPERATIONS: dict[tuple[str, str], str] = {
    ("get", "/healthz"): "health_check",
    ("get", "/v1/openapi.json"): "get_openapi_document",
    ("get", "/v1/scopes"): "list_scopes",
    ("get", "/metrics"): "get_metrics",
    ("post", "/v1/messages"): "send_message",
    ("get", "/v1/messages"): "list_messages",
    ("post", "/v1/messages/batch"): "send_batch",
    ("get", "/v1/messages/{id}"): "get_message",
    ("delete", "/v1/messages/{id}"): "cancel_message",
    ("get", "/v1/idempotency/records/{key}"): "get_idempotency_record",
    ("delete", "/v1/idempotency/records/{key}"): "delete_idempotency_record",
    ("get", "/v1/quotas"): "get_quotas",
    ("get", "/v1/scheduled-messages"): "list_scheduled_messages",
    ("get", "/v1/scheduled-messages/{id}"): "get_scheduled_message",
    ("patch", "/v1/scheduled-messages/{id}"): "reschedule_message",
    ("delete", "/v1/scheduled-messages/{id}"): "cancel_scheduled_message",
    ("post", "/v1/api-keys"): "create_api_key",
    ("get", "/v1/api-keys"): "list_api_keys",
    ("get", "/v1/api-keys/{id}"): "get_api_key",
    ("delete", "/v1/api-keys/{id}"): "revoke_api_key",
    ("post", "/v1/smtp-credentials"): "create_smtp_credential",
    ("get", "/v1/smtp-credentials"): "list_smtp_credentials",
    ("get", "/v1/smtp-credentials/{id}"): "get_smtp_credential",
    ("delete", "/v1/smtp-credentials/{id}"): "revoke_smtp_credential",
    ("get", "/v1/sending-queues"): "list_sending_queues",
    ("post", "/v1/sending-queues/{domain}/retry"): "retry_domain_queue",
    ("post", "/v1/sending-queues/{domain}/suspend"): "suspend_domain_queue",
    ("post", "/v1/sending-queues/{domain}/resume"): "resume_domain_queue",
    ("post", "/v1/sending-queues/{domain}/bounce"): "bounce_domain_queue",
    ("delete", "/v1/sending-queues/{domain}"): "purge_domain_queue",
    ("delete", "/v1/sending-queues/scheduled"): "purge_scheduled_messages",
    ("post", "/v1/sending-queues/resend"): "resend_message",
    ("post", "/v1/messages/{id}/retry"): "retry_message",
    ("get", "/v1/suppressions"): "list_suppressions",
    ("post", "/v1/suppressions"): "create_suppressions",
    ("get", "/v1/suppressions/{email}"): "get_suppression",
    ("delete", "/v1/suppressions/{email}"): "delete_suppression",
    ("get", "/v1/allowlist"): "list_allowlist",
    ("post", "/v1/allowlist"): "add_allowlist_entry",
    ("delete", "/v1/allowlist/{entry}"): "delete_allowlist_entry",
    ("get", "/v1/bounces"): "list_bounces",
    ("get", "/v1/bounces/{id}"): "get_bounce",
    ("get", "/v1/events"): "list_events",
    ("get", "/v1/messages/{id}/events"): "list_message_events",
    ("get", "/v1/stats"): "get_stats",
    ("get", "/v1/stats/bounces"): "get_bounce_stats",
    ("get", "/v1/stats/overview"): "get_overview",
    ("get", "/v1/webhooks"): "list_webhooks",
    ("post", "/v1/webhooks"): "create_webhook",
    ("get", "/v1/webhooks/{id}"): "get_webhook",
    ("put", "/v1/webhooks/{id}"): "replace_webhook",
    ("patch", "/v1/webhooks/{id}"): "update_webhook",
    ("delete", "/v1/webhooks/{id}"): "delete_webhook",
    ("post", "/v1/webhooks/{id}/rotate-secret"): "rotate_webhook_secret",
    ("post", "/v1/webhooks/{id}/test"): "test_webhook",
    ("get", "/v1/webhooks/{id}/deliveries"): "list_webhook_deliveries",
    ("get", "/v1/domains"): "list_domains",
    ("post", "/v1/domains"): "create_domain",
    ("get", "/v1/domains/{id}"): "get_domain",
    ("delete", "/v1/domains/{id}"): "delete_domain",
    ("get", "/v1/domains/{id}/verify"): "check_domain",
    ("post", "/v1/domains/{id}/verify"): "verify_domain",
    ("post", "/v1/domains/{id}/rotate-dkim"): "rotate_domain_dkim",
    ("get", "/v1/templates"): "list_templates",
    ("post", "/v1/templates"): "create_template",
    ("post", "/v1/templates/validate"): "validate_template",
    ("get", "/v1/templates/{id}"): "get_template",
    ("put", "/v1/templates/{id}"): "update_template",
    ("delete", "/v1/templates/{id}"): "delete_template",
    ("get", "/v1/templates/{id}/versions"): "list_template_versions",
    ("get", "/v1/templates/{id}/versions/{version}"): "get_template_version",
    ("post", "/v1/templates/{id}/versions/{version}/rollback"): "rollback_template",
    ("post", "/v1/templates/{id}/preview"): "preview_template",
    ("get", "/v1/sandbox/messages"): "list_sandbox_messages",
    ("get", "/v1/sandbox/messages/{id}"): "get_sandbox_message",
    ("get", "/v1/sandbox/messages/{id}/raw"): "get_sandbox_message_raw",
    ("get", "/v1/nodes"): "list_nodes",
}
# The first path prefix that matches gives the tag.
TAGS: list[tuple[str, str, str]] = [
    ("/v1/messages/{id}/events", "events", "Events of recipients, and counts over time"),
    ("/v1/messages/{id}/retry", "queues", "The queue by destination domain, and operator actions"),
    ("/v1/messages", "messages", "Send, batch, show, list and cancel messages"),
    ("/v1/scheduled-messages", "scheduled", "Messages waiting for their send_at"),
    ("/v1/idempotency", "messages", ""),
    ("/v1/quotas", "keys", ""),
    ("/v1/api-keys", "keys", "API keys, their scopes and quotas"),
    ("/v1/scopes", "keys", ""),
    ("/v1/smtp-credentials", "smtp_credentials", "Credentials for SMTP submission"),
    ("/v1/sending-queues", "queues", ""),
    ("/v1/suppressions", "suppressions", "The suppression list, the allowlist and recorded bounces"),
    ("/v1/allowlist", "suppressions", ""),
    ("/v1/bounces", "suppressions", ""),
    ("/v1/events", "events", ""),
    ("/v1/stats", "events", ""),
    ("/v1/webhooks", "webhooks", "Signed webhook endpoints"),
    ("/v1/domains", "domains", "Sending domains: DKIM keys and DNS checks"),
    ("/v1/templates", "templates", "Versioned message templates"),
    ("/v1/sandbox", "sandbox", "Mail captured instead of delivered (sandbox mode, test keys)"),
    ("/v1/nodes", "nodes", "The relay nodes serving this store"),
    ("/", "service", "Health, this document and metrics"),
]


def _tag(path: str) -> str:
    return next(tag for prefix, tag, _ in TAGS if path.startswith(prefix))


_BODY_TIMEOUT = "request_timeout: the body did not arrive within [http] body_timeout (the connection is closed)"
_CONNECTIONS = (
    "Connection limits ([http]): request headers must be complete header_timeout after their first byte and a"
    " body body_timeout after its headers (else 408 request_timeout, and the connection is closed); a connection"
    " idle keepalive_timeout between requests is closed; more than max_connections_per_ip connections from one"
    " address, or more than max_connections in all, get 503 too_many_connections (Retry-After) and are closed."
    " A request body that does not fit in [server] max_inflight_bytes (memory for bodies in hand) within 2 s"
    " gets 503 service_unavailable (Retry-After)."
)


def document() -> dict[str, Any]:

    for path, item in PATHS.items():
        for method, op in item.items():
            if (method, path) in OPERATIONS:
                op["operationId"] = OPERATIONS[method, path]
            op["tags"] = [_tag(path)]
            if path.startswith("/v1/") and op.get("security") != []:
                op.setdefault("responses", {}).update({k: v for k, v in _errors().items() if k not in op["responses"]})
            if "requestBody" in op:
                op["responses"].setdefault("408", _json(_ref("Error"), _BODY_TIMEOUT))
            op["responses"].setdefault("500", _json(_ref("Error"), "Internal error"))
    return {
        "openapi": "3.1.0",
        "info": {"title": "relay HTTP API", "version": __version__, "description": _CONNECTIONS},
        "servers": [{"url": "/"}],
        "tags": [{"name": tag, "description": text} for _, tag, text in TAGS if text],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "rly_live_..."}},
            "schemas": SCHEMAS,
        },
        "paths": PATHS,
    }


async def serve_document(request: web.Request) -> web.Response:
    return web.json_response(document())
