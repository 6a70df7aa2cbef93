"""Schemathesis hooks for tests/fuzz/run.sh: what every rollcall response must look like.

Schemathesis's own GraphQL checks take an error that a resolver returns (one with a `path`) for
a server failure unless its code is one they know; rollcall answers refusals such as
UNAUTHENTICATED, FORBIDDEN, NOT_FOUND or CONFLICT that way on purpose. This check replaces
them with the server's own contract:

- no 5xx status;
- the body is a JSON object with the GraphQL response shape: `data` and/or `errors`, and
  nothing but `data`, `errors` and `extensions`;
- `data` is an object or null; `errors`, when present, is a non-empty list of objects, each
  with a string `message` and an `extensions.code` string, and never INTERNAL_SERVER_ERROR;
- an answer without `data` (a request refused before or during validation) has errors, and
  a 4xx answer is such an answer.
"""

from __future__ import annotations

import json

import schemathesis

ALLOWED_KEYS = {"data", "errors", "extensions"}


def _problems(status: int, content_type: str, body: bytes) -> list[str]:
    problems = []
    if status >= 500:
        problems.append(f"server error: HTTP {status}")
    if not content_type.split(";")[0].strip().lower() == "application/json":
        problems.append(f"Content-Type is {content_type!r}, not application/json")
    try:
        payload = json.loads(body)
    except ValueError as err:
        problems.append(f"the body is not JSON ({err})")
        return problems
    if not isinstance(payload, dict):
        problems.append(f"the body is a JSON {type(payload).__name__}, not an object")
        return problems
    extra = set(payload) - ALLOWED_KEYS
    if extra:
        problems.append(f"keys other than data, errors and extensions: {sorted(extra)}")
    if "data" not in payload and "errors" not in payload:
        problems.append("neither `data` nor `errors`")
    if "data" in payload and payload["data"] is not None and not isinstance(payload["data"], dict):
        problems.append("`data` is neither an object nor null")
    if "data" not in payload and not payload.get("errors"):
        problems.append("no `data` and no errors")
    if 400 <= status < 500 and "data" in payload:
        problems.append(f"HTTP {status} with `data`")
    if "errors" in payload:
        errors = payload["errors"]
        if not isinstance(errors, list) or not errors:
            problems.append("`errors` is not a non-empty list")
            return problems
        for index, error in enumerate(errors):
            where = f"errors[{index}]"
            if not isinstance(error, dict):
                problems.append(f"{where} is not an object")
                continue
            if not isinstance(error.get("message"), str):
                problems.append(f"{where} has no string `message`")
            extensions = error.get("extensions")
            code = extensions.get("code") if isinstance(extensions, dict) else None
            if not isinstance(code, str) or not code:
                problems.append(f"{where} has no string `extensions.code`")
            elif code == "INTERNAL_SERVER_ERROR":
                problems.append(f"{where} is an internal server error")
    return problems


@schemathesis.check
def rollcall_graphql_response(ctx, response, case):
    """Every response is a well-formed GraphQL response and none is a server failure."""
    # Schemathesis gives headers with lower-case names and a list of values each.
    content_type = ", ".join(response.headers.get("content-type", []))
    problems = _problems(response.status_code, content_type, response.content)
    if problems:
        raise AssertionError("; ".join(problems))
