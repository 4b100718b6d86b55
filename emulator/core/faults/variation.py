"""Answers that are valid but unexpected: the ``vary`` fault's one response-variation step.

A vendor's answer can differ from the one a client was written against and still be right:
vendors add fields, leave optional ones out or send them as ``null``, send object keys in
another order, and send values the docs allow but few clients see (fal's ``IN_QUEUE`` with a
``queue_position`` above 0, ``IN_PROGRESS`` with ``logs``). :func:`vary` makes such
variations of a JSON answer; each candidate is kept only when ``conforms`` says the vendor
may send it (the operation's response schema in its contract, with the fields the vendor may
add: ``Operation.accepts_variant``), so a variation never breaks the contract.

Kinds (:data:`VARIATION_KINDS`; ``any`` picks one per answer, ``all`` applies each kind in
turn, keeping each step that conforms: one answer that is unexpected in every way at once,
which a client with any of these assumptions trips over):

* ``extra-field``: a property the schema does not name, added to one object (names and
  values from :data:`EXTRA_FIELDS`);
* ``drop-optional``: one property left out (kept only where the schema does not require it);
* ``null-optional``: one property sent as ``null`` (kept only where the schema allows it);
  both only touch scalars that are not URLs: an object, a list or a URL carries the result,
  and a schema that allows it out (Pixazo's ``output`` is ``object | null`` for a job in
  progress) does not say a finished job may lose it;
* ``reorder``: the keys of every object in reverse order (JSON objects are unordered);
* ``rare-value``: a documented but rare value: an integer at 0 raised to 1..20 (fal's
  ``queue_position``), or a ``null`` filled with a list of log entries or an empty list
  (fal's ``logs``).

Draws come from a :class:`random.Random` seeded by the rule (``seed``): the same rule seed
and the same requests give the same answers. :class:`VariedBody` is the ASGI ``send``
wrapper that applies it to a route's answer.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from emulator.core.faults.asgi import Message, Send

#: The kinds of variation (the ``vary`` rule's values, with :data:`MIXES`).
VARIATION_KINDS = ("extra-field", "drop-optional", "null-optional", "reorder", "rare-value")
#: The order ``all`` applies the kinds in: what takes away before what adds, so no later step
#: undoes an earlier one (a dropped field is not the added one), the reordering last.
ALL_ORDER = ("drop-optional", "null-optional", "rare-value", "extra-field", "reorder")
#: Values of ``vary`` besides the kinds: ``any`` (one kind drawn per answer), ``all`` (every
#: kind in turn).
MIXES = ("any", "all")
#: Names and values of added properties: what vendors tend to add.
EXTRA_FIELDS: tuple[tuple[str, Any], ...] = (
    ("trace_id", "00f067aa0ba902b7"), ("region", "us-east-1"), ("meta", {"version": 2}),
    ("credits_used", 1), ("warnings", []), ("deprecated", None), ("beta", True),
)
#: Log entries for a ``rare-value`` that fills a ``null`` (fal's ``logs`` shape).
LOG_ENTRIES = [{"message": "Loading model", "level": "INFO", "source": "user",
                "timestamp": "2026-01-01T00:00:00.000000"}]
#: Tries per answer before giving up (a body none of whose candidates conforms).
MAX_TRIES = 12

#: ``conforms(body) -> bool``: whether the vendor may send ``body`` as this answer.
Conforms = Callable[[Any], bool]


def _objects(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        yield path, value
        for k, v in value.items():
            yield from _objects(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _objects(v, (*path, i))


def _at(root: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        root = root[part]
    return root


def _reordered(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def _incidental(value: Any) -> bool:
    # What an answer may lose or send as null without losing its result: a scalar that is
    # not a URL (objects and lists carry results; a URL string is a result).
    if isinstance(value, (dict, list)):
        return False
    return not (isinstance(value, str) and value.startswith(("http://", "https://", "data:")))


def candidate(body: Any, kind: str, rng: random.Random) -> tuple[Any, str] | None:
    """One variation of ``kind`` of the JSON value ``body`` (a new value; ``body`` is not
    changed) and its description (``extra-field meta at status``), or ``None`` when ``body``
    has nothing to vary that way.

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in VARIATION_KINDS:
        raise ValueError(f"unknown variation {kind!r}")
    if kind == "reorder":
        return (_reordered(body), "reorder") if isinstance(body, dict) and len(body) > 1 else None
    out = copy.deepcopy(body)
    objects = list(_objects(out))
    if not objects:
        return None
    path, obj = objects[rng.randrange(len(objects))]
    where = "/".join(str(p) for p in path) or "(body)"
    if kind == "extra-field":
        name, value = EXTRA_FIELDS[rng.randrange(len(EXTRA_FIELDS))]
        if name in obj:
            return None
        obj[name] = copy.deepcopy(value)
        return out, f"extra-field {name} at {where}"
    if kind == "rare-value":
        keys = [k for k in obj if obj[k] is None or (obj[k] == 0 and type(obj[k]) is int)]
    else:
        keys = [k for k in obj if _incidental(obj[k])]
    if not keys:
        return None
    key = keys[rng.randrange(len(keys))]
    if kind == "drop-optional":
        del obj[key]
        return out, f"drop-optional {key} at {where}"
    if kind == "null-optional":
        if obj[key] is None:
            return None
        obj[key] = None
        return out, f"null-optional {key} at {where}"
    if obj[key] is None:
        obj[key] = copy.deepcopy((LOG_ENTRIES, [])[rng.randrange(2)])
    else:
        obj[key] = rng.randint(1, 20)
    return out, f"rare-value {key} at {where}"


def vary(body: Any, kind: str, rng: random.Random, conforms: Conforms) -> tuple[Any, str | None]:
    """``body`` varied once by ``kind`` (``any``: a kind drawn per try; ``all``: each kind in
    turn, on the result of the ones before), or ``body`` itself when no candidate conforms in
    :data:`MAX_TRIES` tries; with the description of what was varied (``None``: nothing;
    ``all``: the steps that were kept, joined by ``"; "``).

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in MIXES and kind not in VARIATION_KINDS:
        raise ValueError(f"unknown variation {kind!r}")
    if kind == "all":
        steps = []
        for each in ALL_ORDER:
            body, text = vary(body, each, rng, conforms)
            if text is not None:
                steps.append(text)
        return body, "; ".join(steps) or None
    for _ in range(MAX_TRIES):
        chosen = kind if kind != "any" else VARIATION_KINDS[rng.randrange(len(VARIATION_KINDS))]
        made = candidate(body, chosen, rng)
        if made is not None and conforms(made[0]):
            return made
    return body, None


class VariedBody:
    """ASGI ``send`` wrapper: holds the route's answer and sends it varied (:func:`vary`)
    when it is a JSON object or list and a variation conforms (``conforms(status, body)``);
    anything else goes through as it is. ``Content-Length`` follows the new body.
    ``on_varied(text)`` is told what was varied."""

    def __init__(self, kind: str, seed: int, send: Send,
                 conforms: Callable[[int, Any], bool] | None,
                 on_varied: Callable[[str], None] | None = None) -> None:
        self.kind = kind
        self.rng = random.Random(seed)
        self.send = send
        self.conforms = conforms
        self.on_varied = on_varied
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        start, body = self.start, b"".join(self.chunks)
        self.start, self.chunks = None, []
        body = self._varied(start, body)
        headers = [(k, v) for k, v in start.get("headers", ()) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({**start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    def _varied(self, start: Message, body: bytes) -> bytes:
        if self.conforms is None:
            return body
        media = b""
        for name, value in start.get("headers", ()):
            if name.lower() == b"content-type":
                media = value.split(b";", 1)[0].strip().lower()
        if not media.endswith(b"json"):
            return body
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        status = int(start["status"])
        check = self.conforms
        varied, text = vary(data, self.kind, self.rng, lambda b: check(status, b))
        if text is None:
            return body
        if self.on_varied is not None:
            self.on_varied(text)
        return orjson.dumps(varied)


__all__ = ["EXTRA_FIELDS", "LOG_ENTRIES", "MAX_TRIES", "MIXES", "VARIATION_KINDS", "Conforms",
           "VariedBody", "candidate", "vary"]
