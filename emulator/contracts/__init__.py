"""The OpenAPI 3.1 contracts: where they are, what they say, and checking traffic against them.

One YAML document per vendor (``pixazo.yaml``, ``apiframe.yaml``, ...) plus ``emulator.yaml``
for the ``/_emulator`` control plane. They are the single source of truth for the wire
format: the request guard (strict mode, violations), the end-to-end tests' response checks,
the schemathesis suite (``rmbg-emulator contracts check``) and the hypothesis strategies
(:mod:`emulator.testing.strategies`) all read them through this package.

The package, by concept: :mod:`~emulator.contracts.loading` (where the files are, their text,
the cache), :mod:`~emulator.contracts.references` (``$ref``),
:mod:`~emulator.contracts.formats` (custom formats, compiled schemas, patterns),
:mod:`~emulator.contracts.operations` (operations, prefixes, path matching, request checks),
:mod:`~emulator.contracts.responses` (response checks),
:mod:`~emulator.contracts.registry` (the control plane's enums, from the registries) and
:mod:`~emulator.contracts.document` (a whole contract, and several together). Every name is
re-exported here: ``from emulator.contracts import Contract`` and ``contracts.load(...)``.

Where they are found (first hit wins):

1. ``$RMBG_EMULATOR_CONTRACTS``, a directory;
2. ``contracts/`` at the root of a source checkout (beside ``pyproject.toml``), so an
   editable install or ``PYTHONPATH=.`` sees edits at once;
3. ``emulator/_contracts/`` inside an installed package: ``setup.py``'s ``build_py`` copies
   ``contracts/*.yaml`` there when a wheel is built.

Conventions the machinery relies on (a new vendor needs only a new contract file):

* ``x-vendor``: the adapter's ``slug`` (``emulator`` for the control plane).
* ``operationId``: the ``operation`` name the adapter gives the route
  (``VendorAdapter.route(..., operation="submit")``).
* Servers marked ``x-emulator: true`` give where the emulator serves a path: the path part of
  their URL is the prefix on the one port (``""`` for a vendor's main host, ``/queue``...). A
  path or operation may have its own ``servers`` (a vendor with several hosts). A real server
  URL may carry a path too (``https://queue.fal.run/fal-ai/bria``): its paths are written
  below it, which is how two hosts serve the same path (fal's ``fal.run`` and
  ``queue.fal.run`` both have ``/fal-ai/bria/background/remove``); :meth:`Contract.flattened`
  puts the server's path back for a run against that host.
* ``format: image-url`` (an http(s) URL or a ``data:`` URI of an image) and
  ``format: webhook-url`` (an http(s) URL) mark the fields that property-based runs fill with
  safe values, so no run reaches the network.
* ``x-violation-status`` / ``x-violation-code`` on a schema: the status and code a strict-mode
  violation of that schema gets (default 422, ``contract_violation``).
* ``x-state-dependent: true`` on a response: a *valid* request may get this status because of
  the state of what it names (fal's result of a request not done yet: 400); the property-based
  suite accepts it for valid data (:mod:`emulator.testing.contract_check`).
* ``x-token-from: {operationId, pointer, query?, body?}`` on a security scheme: its credential
  is a token that operation issues (fal's CDN upload token); the suite fetches one. A list of
  such steps runs in order, each step's ``"{token}"`` being the one before's (GMI Cloud's
  login, then session); ``"{api_key}"`` is the suite's key.
* ``x-status-words: true`` on the one schema whose enum holds the vendor's status words (the
  words of the adapter's ``status_words`` table and its ``other_words`` are exactly that enum;
  a test checks each registered vendor). ``Contract.status_words`` reads it.
* ``x-extensible-responses: true`` at the top: the vendor may add fields to its answers; the
  response schemas' ``additionalProperties: false`` says what the emulator sends. The ``vary``
  fault checks its variations against the schemas with those lifted
  (``Operation.accepts_variant``).
* ``x-transport-responses: {status: response}`` at the top: what the HTTP server answers, before
  any route, to a request it cannot parse (a malformed header name, an unknown
  ``Transfer-Encoding``: uvicorn's ``text/plain`` 400). Every operation may get it, so loading
  merges it into every operation's responses (:func:`with_transport_responses`).
"""

from __future__ import annotations

from emulator.contracts.document import (
    TRANSPORT_RESPONSES,
    Contract,
    ContractSet,
    with_transport_responses,
)
from emulator.contracts.errors import ContractError
from emulator.contracts.formats import (
    FORMATS,
    IMAGE_URL,
    WEBHOOK_URL,
    SchemaValidator,
    compile_schema,
    format_checker,
    is_http_url,
    is_image_url,
)
from emulator.contracts.loading import (
    ENV_DIR,
    PACKAGED_DIR,
    SOURCE_DIR,
    contracts_dir,
    for_vendor,
    load,
    load_all,
    names,
    path_of,
    text,
)
from emulator.contracts.operations import (
    HTTP_METHODS,
    Operation,
    Parameter,
    Problem,
    SecurityScheme,
)
from emulator.contracts.references import dereference
from emulator.contracts.registry import CONTROL_PLANE, fill_registry_enums, registry_catalog
from emulator.contracts.responses import GENERIC_HEADERS, ResponseSpec

__all__ = [
    "CONTROL_PLANE", "ENV_DIR", "FORMATS", "GENERIC_HEADERS", "HTTP_METHODS", "IMAGE_URL",
    "PACKAGED_DIR", "SOURCE_DIR", "TRANSPORT_RESPONSES", "WEBHOOK_URL", "Contract",
    "ContractError", "ContractSet", "Operation", "Parameter", "Problem", "ResponseSpec",
    "SchemaValidator", "SecurityScheme", "compile_schema", "contracts_dir", "dereference",
    "fill_registry_enums", "for_vendor", "format_checker", "is_http_url", "is_image_url", "load",
    "load_all", "names", "path_of", "registry_catalog", "text", "with_transport_responses",
]
