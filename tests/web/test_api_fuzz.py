"""Every operation of /v1/openapi.json fed generated, mostly hostile, input.

For each documented operation and each kind of caller (admin, user, no
token, a garbage token), requests are generated from the document itself:
path and query parameters and bodies with valid, odd and hostile values.
No answer may be a 5xx, every status must be one the document lists for the
operation, and every JSON answer must match the schema documented for its
status. The generator is seeded and the number of requests fixed, so the
test is repeatable and quick.
"""

from __future__ import annotations

import json
import random
import urllib.parse
from typing import Any

import aiohttp
import jsonschema

from astpresence.web.auth import Role
from tests.support.e2e import RunningDaemon

SEED = 20261203
CASES_PER_OPERATION = 12

STRINGS: list[Any] = [
    "", " ", "2000", "2001", "nobody", "dnd", "DND", "available", "away", "meeting",
    "{", "}", "%", "a/b", "..", "\x00", "a\nb", "\r\nX-Evil: 1", "\u2028", "\x7f", "\x85",
    "\ud800", "é" * 200, "x" * 5000, "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
    "2026-13-01T00:00:00Z", "2026-12-03T10:00:00", "NaN", "Infinity", "-1", "1e308",
    "astp_00000000_" + "x" * 32, "<script>alert(1)</script>", "' OR 1=1 --",
]
VALUES: list[Any] = [*STRINGS, None, True, False, 0, -1, 1, 0.5, 59, 1e308, -1e308, 10**30,
                     [], {}, [1], ["*"], {"a": 1}, [[[[]]]]]
NUMBERS: list[Any] = [0, -1, 1e14, 1e308, -1e308, 10**30, 10**400, 1e-9, 31622401]
RAW_BODIES = [b"", b"{", b"NaN", b"[]", b"null", b'{"state": NaN}', b'{"state": "dnd"',
              b"\xff\xfe", b"[" * 3000 + b"]" * 3000, b'{"a": ' * 200 + b"1" + b"}" * 200]
PATH_VALUES: dict[str, list[str]] = {
    "user": ["2000", "2001", "2002", "nobody", "{", "}", "%7B", "a%2Fb", "%0a", "..", "%C3%A9",
             "x" * 300, "%00", "%ZZ"],
    "name": ["calendar", "manual", "auto", "Bad%20Name", "x" * 40, "%0a", "job-interview"],
    "id": ["deadbeef", "%0a", "x" * 200, "..", "%7B"],
}


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["schemas"][name]
    return schema


def _valid_value(doc: dict[str, Any], schema: dict[str, Any], rng: random.Random) -> Any:
    schema = _resolve(doc, schema)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "oneOf" in schema:
        return _valid_value(doc, rng.choice(schema["oneOf"]), rng)
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "number":
        return rng.choice([1, 30, 3600, 0.5])
    if kind == "integer":
        return rng.choice([1, 10, 1000])
    if schema.get("format") == "date-time":
        return "2027-01-01T10:00:00+00:00"
    return rng.choice(["2000", "desk", "In a meeting"])


def _body(doc: dict[str, Any], op: dict[str, Any], rng: random.Random) -> bytes | None:
    if "requestBody" not in op:
        return None if rng.random() < 0.8 else rng.choice(RAW_BODIES)
    if rng.random() < 0.2:
        return rng.choice(RAW_BODIES)
    schema = _resolve(doc, op["requestBody"]["content"]["application/json"]["schema"])
    body: dict[str, Any] = {}
    for key, sub in schema.get("properties", {}).items():
        roll = rng.random()
        if roll < 0.45:
            body[key] = _valid_value(doc, sub, rng)
        elif roll < 0.8:
            numeric = "number" in json.dumps(_resolve(doc, sub))
            body[key] = rng.choice(NUMBERS if numeric and rng.random() < 0.5 else VALUES)
    if rng.random() < 0.1:
        body[rng.choice(STRINGS) or "extra"] = 1
    return json.dumps(body).encode()


def _request(doc: dict[str, Any], path: str, item: dict[str, Any], op: dict[str, Any],
             rng: random.Random) -> tuple[str, bytes | None]:
    url = path
    query: list[tuple[str, str]] = []
    for param in [*item.get("parameters", []), *op.get("parameters", [])]:
        if param["in"] == "path":
            url = url.replace("{" + param["name"] + "}", rng.choice(PATH_VALUES[param["name"]]))
        elif rng.random() < 0.7:
            value = rng.choice([_valid_value(doc, param["schema"], rng), rng.choice(STRINGS)])
            query.append((param["name"], str(value)))
    if query:
        # A lone surrogate goes out as the bytes it would be (not UTF-8): hostile too.
        url += "?" + urllib.parse.urlencode(query, errors="surrogatepass")
    return url, _body(doc, op, rng)


def _check(doc: dict[str, Any], op: dict[str, Any], what: str, status: int,
           content_type: str, text: str) -> None:
    assert status < 500, f"{what}: {status} {text[:300]}"
    documented = op["responses"]
    assert str(status) in documented, f"{what}: {status} is not documented: {text[:300]}"
    content = documented[str(status)].get("content", {}).get("application/json")
    if content is None:
        return
    assert content_type == "application/json", f"{what}: {status} {content_type}"
    body = json.loads(text)
    schema = {"components": doc["components"], **content["schema"]}
    try:
        jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as exc:
        raise AssertionError(f"{what}: {status} off the schema: {exc.message}\n{text[:500]}")


async def test_no_operation_answers_5xx_or_off_its_schema(daemon: RunningDaemon) -> None:
    rng = random.Random(SEED)
    user = await daemon.make_token(Role.USER, "2000")
    callers = {"admin": daemon.token, "user": user, "none": None,
               "garbage": "astp_00000000_" + "y" * 32}
    async with aiohttp.ClientSession() as http:
        async with http.get(daemon.url + "/v1/openapi.json") as resp:
            doc = await resp.json()
        sent = 0
        for path, item in doc["paths"].items():
            for method, op in item.items():
                if method not in ("get", "put", "post", "delete"):
                    continue
                for who, token in callers.items():
                    for _ in range(CASES_PER_OPERATION):
                        url, body = _request(doc, path, item, op, rng)
                        headers = {"Content-Type": "application/json"}
                        if token is not None:
                            headers["Authorization"] = f"Bearer {token}"
                        async with http.request(method.upper(), daemon.url + url, data=body,
                                                headers=headers) as resp:
                            text = await resp.text(errors="replace")
                            what = f"{method.upper()} {url[:80]} as {who}, body {body!r:.120}"
                            _check(doc, op, what, resp.status, resp.content_type, text)
                        sent += 1
    assert sent >= 20 * 4 * CASES_PER_OPERATION
