"""The contract machinery on synthetic documents: several hosts, $refs, the fast validator."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator import contracts
from emulator.contracts import Contract, ContractError, SchemaValidator

TWO_HOSTS: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Two hosts", "version": "1"},
    "x-vendor": "twohosts",
    "servers": [{"url": "https://run.example"}, {"url": "http://{h}:8000", "x-emulator": True,
                                                   "variables": {"h": {"default": "x"}}}],
    "components": {"securitySchemes": {"key": {"type": "apiKey", "in": "header",
                                               "name": "Authorization",
                                               "x-key-prefix": "Key "}},
                   "schemas": {"Id": {"type": "string", "minLength": 3}}},
    "security": [{"key": []}],
    "paths": {
        "/run/{id}": {"get": {"operationId": "run", "parameters": [
            {"name": "id", "in": "path", "required": True,
             "schema": {"$ref": "#/components/schemas/Id"}}],
            "responses": {"200": {"description": "ok"}}}},
        "/requests/{id}": {
            "servers": [{"url": "https://queue.example"},
                        {"url": "http://127.0.0.1:8000/queue", "x-emulator": True}],
            "get": {"operationId": "status", "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "logs", "in": "query", "schema": {"type": "integer", "enum": [0, 1]}}],
                "responses": {"200": {"description": "ok"}}}},
    },
}


def test_paths_with_their_own_servers_live_under_their_prefix() -> None:
    contract = Contract("twohosts", TWO_HOSTS)
    status = contract.operation("status")
    assert status is not None and status.prefixes == ("/queue",)
    assert status.real_servers == ("https://queue.example",)
    assert contract.match("GET", "/queue/requests/abc") == (status, True)
    assert contract.match("GET", "/requests/abc") == (None, False)
    assert contract.match("POST", "/queue/requests/abc") == (None, True)
    assert status.match("/queue/requests/abc") == {"id": "abc"}


def test_flattened_for_the_emulator_and_for_one_real_host() -> None:
    contract = Contract("twohosts", TWO_HOSTS)
    flat = contract.flattened("http://127.0.0.1:9000")
    assert set(flat["paths"]) == {"/run/{id}", "/queue/requests/{id}"}
    assert flat["servers"] == [{"url": "http://127.0.0.1:9000"}]
    assert "servers" not in flat["paths"]["/queue/requests/{id}"]
    real = contract.flattened("https://queue.example")
    assert set(real["paths"]) == {"/requests/{id}"}
    assert real["servers"] == [{"url": "https://queue.example"}]


SAME_PATH: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "One path on two hosts", "version": "1"},
    "servers": [{"url": "https://run.example"}, {"url": "http://x:8000", "x-emulator": True}],
    "paths": {
        "/app/go": {"post": {"operationId": "run", "responses": {"200": {"description": "ok"}}}},
        "/go": {
            "servers": [{"url": "https://queue.example/app"},
                        {"url": "http://x:8000/queue/app", "x-emulator": True}],
            "post": {"operationId": "submit", "responses": {"200": {"description": "ok"}}}},
    },
}


def test_a_server_path_lets_two_hosts_serve_the_same_path() -> None:
    """fal's run and queue hosts both serve /fal-ai/bria/background/remove: the queue's
    paths are written below its server's path, and every layout puts them back."""
    contract = Contract("samepath", SAME_PATH)
    run, submit = contract.operation("run"), contract.operation("submit")
    assert run is not None and submit is not None
    assert submit.prefixes == ("/queue/app",)
    assert contract.match("POST", "/queue/app/go") == (submit, True)
    assert contract.match("POST", "/app/go") == (run, True)
    assert set(contract.flattened("http://127.0.0.1:9")["paths"]) == {"/app/go",
                                                                      "/queue/app/go"}
    queue = contract.flattened("https://queue.example")
    assert set(queue["paths"]) == {"/app/go"}
    assert "servers" not in queue["paths"]["/app/go"]
    assert queue["paths"]["/app/go"]["post"]["operationId"] == "submit"
    assert set(contract.flattened("https://queue.example/app")["paths"]) == {"/go"}
    assert contract.flattened("https://run.example")["paths"]["/app/go"]["post"][
        "operationId"] == "run"
    assert contract.url_for(submit, "http://127.0.0.1:9/") == "http://127.0.0.1:9/queue/app/go"
    assert contract.url_for(submit, "https://queue.example") == "https://queue.example/app/go"
    assert contract.url_for(submit, "https://run.example") == "https://queue.example/app/go"
    assert contract.url_for(run, "https://queue.example") == "https://run.example/app/go"


def test_two_paths_landing_on_one_place_are_refused() -> None:
    clash = {**SAME_PATH, "paths": {**SAME_PATH["paths"], "/queue/app/go": {
        "get": {"operationId": "other", "responses": {"200": {"description": "ok"}}}}}}
    with pytest.raises(ContractError, match="both land on /queue/app/go"):
        Contract("clash", clash).flattened("http://127.0.0.1:9")


def test_key_prefix_and_parameter_checks() -> None:
    contract = Contract("twohosts", TWO_HOSTS)
    scheme = contract.security_schemes()["key"]
    assert scheme.header_value("abc") == ("Authorization", "Key abc")
    op = contract.operation("run")
    assert op is not None
    problems = op.check_request(headers={"authorization": "Key "}, query={},
                                path_params={"id": "ab"}, content_type=None, body=None,
                                body_present=False)
    assert [(p.location, p.field, p.rule) for p in problems] == [
        ("security", "Authorization", "security"), ("path", "id", "minLength")]
    status = contract.operation("status")
    assert status is not None
    bad = status.check_request(headers={"authorization": "Key k"}, query={"logs": "2"},
                               path_params={"id": "x"}, content_type=None, body=None,
                               body_present=False)
    assert [(p.field, p.rule) for p in bad] == [("logs", "enum")]
    good = status.check_request(headers={"authorization": "Key k"}, query={"logs": "1"},
                                path_params={"id": "x"}, content_type=None, body=None,
                                body_present=False)
    assert good == []


def test_refs_are_resolved_and_bad_ones_refused() -> None:
    assert contracts.dereference({"a": {"$ref": "#/b"}, "b": {"c": 1}})["a"] == {"c": 1}
    with pytest.raises(ContractError, match="unresolvable"):
        contracts.dereference({"a": {"$ref": "#/nope"}})
    with pytest.raises(ContractError, match="recursive"):
        contracts.dereference({"a": {"$ref": "#/a"}})
    with pytest.raises(ContractError, match="only local"):
        contracts.dereference({"a": {"$ref": "other.yaml#/x"}})


def test_formats() -> None:
    assert contracts.is_image_url("https://example.com/a.png")
    assert contracts.is_image_url("data:image/png;base64,iVBORw0KGgo=")
    assert not contracts.is_image_url("data:image/png,raw")
    assert not contracts.is_image_url("ftp://example.com/a.png")
    assert not contracts.is_image_url("")
    assert contracts.is_http_url("http://127.0.0.1:9/x")
    assert not contracts.is_http_url("http:///nohost")


def _schemas() -> list[Any]:
    found = []
    for contract in contracts.load_all():
        for op in contract.operations.values():
            found += [v.schema for v in op.body_media.values() if v is not None]
            found += [p.schema for p in op.parameters]
            for spec in op.responses.values():
                found += [v.schema for v in spec.media.values() if v is not None]
    return found


SCHEMAS = _schemas()
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.sampled_from(["QUEUED", "bria-bg-remove",
                                              "https://a.example/x.png", "2026-01-01T00:00:00Z"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["image_url", "model", "status", "error", "request_id",
                                       "briaBgRemoveParams", "image", "jobId", "x"]),
                      inner, max_size=4),
    max_leaves=10)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(index=st.integers(min_value=0, max_value=len(SCHEMAS) - 1), value=JSON)
def test_fast_and_slow_validators_agree(index: int, value: Any) -> None:
    validator = SchemaValidator(SCHEMAS[index])
    assert validator.fast is not None, "jsonschema-rs is installed in the test environment"
    assert bool(validator.fast.is_valid(value)) == bool(validator.slow.is_valid(value))
    assert validator.is_valid(value) == bool(validator.slow.is_valid(value))


#: The package's modules by concept, and the names each defines.
CONCEPTS: dict[str, list[str]] = {
    "errors": ["ContractError"],
    "loading": ["ENV_DIR", "SOURCE_DIR", "PACKAGED_DIR", "contracts_dir", "names", "path_of",
                "text", "load", "load_all", "for_vendor"],
    "references": ["dereference"],
    "formats": ["IMAGE_URL", "WEBHOOK_URL", "FORMATS", "format_checker", "is_http_url",
                "is_image_url", "SchemaValidator", "compile_schema"],
    "operations": ["HTTP_METHODS", "Operation", "Parameter", "Problem", "SecurityScheme"],
    "responses": ["GENERIC_HEADERS", "ResponseSpec"],
    "document": ["Contract", "ContractSet", "TRANSPORT_RESPONSES", "with_transport_responses"],
    "registry": ["CONTROL_PLANE", "fill_registry_enums", "registry_catalog"],
}


def test_the_package_is_split_by_concept_and_reexports_every_name() -> None:
    """``emulator.contracts`` is a package of modules by concept; every name importers used
    from the single module is still there, the very object its concept module defines."""
    import importlib

    assert contracts.__file__ is not None and contracts.__file__.endswith("__init__.py")
    for module, defined in CONCEPTS.items():
        concept = importlib.import_module(f"emulator.contracts.{module}")
        for name in defined:
            assert getattr(contracts, name) is getattr(concept, name), (module, name)
    assert set(contracts.__all__) == {n for names in CONCEPTS.values() for n in names}
    # the emulator package's directory, from which the YAML files are found
    from emulator.contracts.loading import PACKAGE_DIR
    assert (PACKAGE_DIR / "contracts" / "__init__.py").is_file()
    assert PACKAGE_DIR.parent / "contracts" == contracts.SOURCE_DIR
