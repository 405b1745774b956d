"""The OpenAPI 3.1 document of the HTTP endpoints, served at ``GET /v1/openapi.json``.

Written by hand, next to the endpoints; ``tests/test_http.py`` checks the real answers of a
running server against its schemas, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Any

from kanthorq.dedup import MAX_KEY
from kanthorq.errors import MAX_DELAY
from kanthorq.subjects import MAX_SUBJECT_LENGTH

MS = {"type": "integer", "description": "milliseconds since the epoch"}
NAME = {"type": "string", "pattern": "^[A-Za-z0-9]+(_[A-Za-z0-9]+)*$", "maxLength": 63}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _answer(description: str, schema: str = "Error", **extra: Any) -> dict[str, Any]:
    return {"description": description, **_json(_ref(schema)), **extra}


RETRY_AFTER = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
ERRORS = {
    "401": _answer("no token, or not a known one"),
    "403": _answer("the token may not do this, or not on this stream"),
    "422": _answer("a field is not valid: error.field names it"),
    "503": _answer("the database cannot be reached; nothing was written", headers=RETRY_AFTER),
}
PUBLISH_ERRORS = {
    **ERRORS,
    "400": _answer("the body is not valid JSON"),
    "413": _answer("the request body, an event's body, or the batch is too large"),
    "500": _answer(
        "error.code outcome_unknown: the connection failed while writing, so it may have "
        "been written (error.may_be_written)"
    ),
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "field"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {
                        "type": ["string", "null"],
                        "description": "the field at fault: subject, items[3].key, stream ...",
                    },
                    "may_be_written": {"type": "boolean"},
                },
            }
        },
    },
    "NewEvent": {
        "type": "object",
        "required": ["subject"],
        "additionalProperties": False,
        "properties": {
            "subject": {"type": "string", "maxLength": MAX_SUBJECT_LENGTH},
            "body": {"description": "any JSON value, stored as its JSON text (empty if absent)"},
            "metadata": {"type": ["object", "null"]},
            "delay": {"type": ["number", "null"], "minimum": 0, "maximum": MAX_DELAY},
            "at": {"type": ["string", "null"], "format": "date-time"},
            "key": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_KEY},
        },
    },
    "BatchItem": {
        "type": "object",
        "required": ["subject"],
        "additionalProperties": False,
        "properties": {
            "subject": {"type": "string", "maxLength": MAX_SUBJECT_LENGTH},
            "body": {},
            "metadata": {"type": ["object", "null"]},
            "key": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_KEY},
        },
    },
    "Published": {
        "type": "object",
        "required": ["id", "created"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "created": {"type": "boolean", "description": "false: the key was taken"},
        },
    },
    "BatchPublished": {
        "type": "object",
        "required": ["ids", "created"],
        "additionalProperties": False,
        "properties": {
            "ids": {"type": "array", "items": {"type": "string"}},
            "created": {"type": "array", "items": {"type": "boolean"}},
        },
    },
    "Body": {
        "type": "object",
        "required": ["size", "encoding", "value"],
        "additionalProperties": False,
        "properties": {
            "size": {"type": "integer"},
            "encoding": {"enum": ["json", "utf-8", "base64"]},
            "value": {"description": "the decoded JSON, the text, or base64"},
        },
    },
    "Event": {
        "type": "object",
        "required": ["id", "subject", "created_at", "metadata", "body"],
        "additionalProperties": False,
        "properties": {
            "stream": {"type": "string"},
            "id": {"type": "string"},
            "subject": {"type": "string"},
            "created_at": MS,
            "metadata": {},
            "body": _ref("Body"),
        },
    },
    "Task": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "consumer",
            "stream",
            "event_id",
            "subject",
            "state",
            "state_code",
            "attempts",
            "attempts_used",
            "attempt_max",
            "schedule_at",
            "attempted_at",
            "finalized_at",
            "created_at",
            "updated_at",
            "metadata",
            "errors",
            "event",
        ],
        "properties": {
            "consumer": {"type": "string"},
            "stream": {"type": "string"},
            "event_id": {"type": "string"},
            "subject": {"type": "string"},
            "state": {"type": "string"},
            "state_code": {"type": "integer"},
            "attempts": {"type": "integer"},
            "attempts_used": {"type": "integer"},
            "attempt_max": {"type": "integer"},
            "schedule_at": MS,
            "attempted_at": MS,
            "finalized_at": MS,
            "created_at": MS,
            "updated_at": MS,
            "metadata": {},
            "errors": {"type": "array", "items": {"type": "object"}},
            "event": {"anyOf": [_ref("Event"), {"type": "null"}]},
        },
    },
}


def _param(name: str, where: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


STREAM = _param("stream", "path", "the stream's name", **NAME)
DELAY = _param("delay", "query", "seconds from now", type="number", minimum=0)
AT = _param("at", "query", "an ISO 8601 time with an offset", type="string", format="date-time")


def document(max_body_size: int, max_batch: int) -> dict[str, Any]:
    """The OpenAPI document, with this server's limits in its descriptions."""
    raw = {"schema": {"type": "string", "format": "binary"}}
    publish = {
        "summary": "Publish one event",
        "description": (
            "A JSON body (NewEvent) is one event. Any other Content-Type is stored as bytes, "
            "with its subject in ?subject= or the KanthorQ-Subject header. The request body "
            f"is at most {max_body_size} bytes."
        ),
        "parameters": [
            STREAM,
            _param("subject", "query", "the subject of a raw (non-JSON) body"),
            _param("KanthorQ-Subject", "header", "the subject of a raw (non-JSON) body"),
            _param("key", "query", "the deduplication key of a raw body"),
            _param("Idempotency-Key", "header", "the deduplication key"),
            _param("metadata", "query", "a raw body's metadata: a JSON object"),
            DELAY,
            AT,
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("NewEvent")}, "*/*": raw},
        },
        "responses": {
            "201": {
                "description": "published",
                **_json(_ref("Published")),
                "headers": {"Location": {"schema": {"type": "string"}}},
            },
            "200": _answer("the key was taken: the id of the event holding it", "Published"),
            **PUBLISH_ERRORS,
        },
    }
    batch = {
        "summary": "Publish a batch of events, all or none",
        "description": (
            f"Up to {max_batch} events, as a JSON array or NDJSON lines, written by one "
            "publish_many: every one of them or none. delay and at schedule all of them."
        ),
        "parameters": [STREAM, DELAY, AT],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "array", "items": _ref("BatchItem")}},
                "application/x-ndjson": {"schema": _ref("BatchItem")},
            },
        },
        "responses": {
            "201": _answer("published: the ids in the order of the items", "BatchPublished"),
            "200": _answer("every key was taken", "BatchPublished"),
            "415": _answer("neither JSON nor NDJSON"),
            **PUBLISH_ERRORS,
        },
    }
    read_errors = {**ERRORS, "404": _answer("no such stream, consumer, event or task")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "kanthorq HTTP publisher", "version": "1"},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/streams/{stream}/events": {"post": publish},
            "/v1/streams/{stream}/events:batch": {"post": batch},
            "/v1/streams/{stream}/events/{event_id}": {
                "get": {
                    "summary": "A stored event",
                    "parameters": [STREAM, _param("event_id", "path", "the event's id")],
                    "responses": {"200": _answer("the event", "Event"), **read_errors},
                }
            },
            "/v1/consumers/{consumer}/tasks/{event_id}": {
                "get": {
                    "summary": "The state of a consumer's task for an event",
                    "parameters": [
                        _param("consumer", "path", "the consumer's name", **NAME),
                        _param("event_id", "path", "the event's id"),
                    ],
                    "responses": {"200": _answer("the task", "Task"), **read_errors},
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "the OpenAPI document"}},
                }
            },
        },
    }
