"""The contracts themselves: valid OpenAPI 3.1, consistent with the routes the emulator serves,
examples that obey their own schemas, links and sources that resolve."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from emulator import contracts
from emulator.app import create_app
from emulator.settings import Settings
from emulator.vendors import load_all
from emulator.vendors.base import VendorAdapter
from tests.conftest import REPO

NAMES = contracts.names()
VENDOR_DOCS = REPO / "docs" / "vendors"


def shape(path: str) -> str:
    """``/v2/jobs/{id}`` and ``/v2/jobs/{job_id}`` have the same shape."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def walk(node: Any, at: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [(at, node)]
    if isinstance(node, dict):
        for k, v in node.items():
            out += walk(v, f"{at}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += walk(v, f"{at}/{i}")
    return out


VENDORS = [n for n in NAMES if contracts.load(n).vendor != "emulator"]


def test_every_contract_is_there() -> None:
    assert {*load_all(), "emulator"} <= {contracts.load(n).vendor for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_contract_is_valid_openapi_3_1(name: str) -> None:
    contract = contracts.load(name)
    assert contract.document["openapi"].startswith("3.1")
    validate(contract.document)


def test_every_vendor_adapter_has_a_contract() -> None:
    slugs = {c.vendor for c in contracts.load_all()}
    missing = sorted(set(load_all()) - slugs)
    assert not missing, f"vendors without a contract in contracts/: {missing}"


def _served(emulator: Any) -> dict[str, set[tuple[str, str, str]]]:
    """(operation name, method, path shape on the one port) of every route, by vendor slug."""
    out: dict[str, set[tuple[str, str, str]]] = {}
    adapter: VendorAdapter
    for slug, adapter in emulator.adapters.items():
        per_host = adapter.routes()
        found: set[tuple[str, str, str]] = set()
        for spec in adapter.hosts:
            for route in per_host.get(spec.key, []):
                assert isinstance(route, Route)
                operation = (route.name or "").split(".", 1)[1]
                for method in route.methods or ():
                    if method != "HEAD":
                        found.add((operation, method, shape(spec.prefix + route.path)))
        out[slug] = found
    return out


def test_every_served_vendor_route_is_in_its_contract_and_back() -> None:
    app = create_app(Settings(engine="grabcut"))
    for slug, served in _served(app.state.emulator).items():
        contract = contracts.for_vendor(slug)
        assert contract is not None
        documented = {(op.operation_id, op.method, shape(op.prefixes[0] + op.path))
                      for op in contract.operations.values()}
        assert served == documented, f"{slug}: served {served} documented {documented}"


def test_every_control_plane_route_is_in_the_emulator_contract_and_back() -> None:
    from emulator.admin import admin_routes, file_route

    app = create_app(Settings(engine="grabcut"))
    emulator = app.state.emulator
    served = set()
    for route in [*admin_routes(emulator), file_route(emulator)]:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                served.add((method, shape(route.path)))
    documented = {(op.method, shape(op.path))
                  for op in contracts.load("emulator").operations.values()}
    assert served == documented


@pytest.mark.parametrize("name", NAMES)
def test_examples_obey_their_own_schemas(name: str) -> None:
    resolved = contracts.load(name).resolved
    checked = 0
    for at, node in walk(resolved):
        if not isinstance(node, dict) or "schema" not in node:
            continue
        if "/content/" not in at and "/parameters/" not in at:
            continue
        validator = contracts.compile_schema(node["schema"])
        samples = [node["example"]] if "example" in node else []
        samples += [e["value"] for e in (node.get("examples") or {}).values()
                    if isinstance(e, dict) and "value" in e]
        for sample in samples:
            errors = [e.message for e in validator.iter_errors(sample)]
            assert not errors, f"{name}{at}: example breaks its schema: {errors}"
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("name", NAMES)
def test_links_point_at_operations_and_parameters(name: str) -> None:
    contract = contracts.load(name)
    for at, node in walk(contract.resolved):
        if not at.endswith("/links") or not isinstance(node, dict):
            continue
        for link_name, link in node.items():
            target = contract.operation(link["operationId"])
            assert target is not None, f"{at}/{link_name}"
            names = {p.name for p in target.parameters}
            assert set(link.get("parameters", {})) <= names, f"{at}/{link_name}"


@pytest.mark.parametrize("name", VENDORS)
def test_vendor_contract_has_what_the_issue_asks(name: str) -> None:
    contract = contracts.load(name)
    doc = contract.resolved
    servers = [s for item in doc["paths"].values() for s in item.get("servers", [])]
    servers += doc["servers"]
    assert any(s.get("x-emulator") for s in servers)
    assert any(not s.get("x-emulator") and s["url"].startswith("https://") for s in servers)
    submits = [op for op in contract.operations.values()
               if op.operation_id == "submit" or op.operation_id.startswith("submit.")]
    assert submits, f"{name}: no submit operation"
    for submit in submits:
        assert submit.security
        raw = doc["paths"][submit.path][submit.method.lower()]
        accepted = [spec for code, spec in raw["responses"].items() if code.startswith("2")]
        assert accepted and all("links" in spec for spec in accepted), f"{name}: submit links"
        assert raw.get("callbacks") or raw.get("x-no-webhook"), (
            f"{name}: a webhook callback, or x-no-webhook saying none is documented")
    transport = contract.document.get(contracts.TRANSPORT_RESPONSES) or {}
    for op in contract.operations.values():
        for code, spec in op.responses.items():
            if code.startswith(("4", "5")):
                only_transport = set(spec.media) <= set(transport.get(code, {}).get("content", {}))
                assert "application/json" in spec.media or only_transport, (
                    f"{name} {op.operation_id} {code}")


def test_status_links_reach_the_result() -> None:
    """fal's result is an operation of its own: submit -> status -> result."""
    doc = contracts.load("fal").resolved
    queued = doc["paths"]["/background/remove"]["post"]["responses"]["200"]["links"]
    assert {link["operationId"] for link in queued.values()} == {
        "status", "status.stream", "result", "cancel"}
    status = doc["paths"]["/requests/{request_id}/status"]["get"]["responses"]["200"]
    assert status["links"]["GetResult"]["operationId"] == "result"


def headings(page: Path) -> set[str]:
    """The Markdown headings of ``page`` (``## Title`` -> ``Title``)."""
    return {m.group(1).strip() for m in
            re.finditer(r"^#{1,6} (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE)}


def check_citation(where: str, cited: str) -> None:
    """An ``x-source``: ``;``-separated parts, each a vendor's public URL, or a page of the
    repository (``docs/vendors/<slug>.md`` or ``README.md``) with, after ``:``, headings of
    that page separated by commas; a part with no page names headings of the page before."""
    page: Path | None = None
    for raw in cited.split(";"):
        part = raw.strip()
        if part.startswith("https://"):
            assert " " not in part, f"{where}: {cited}"
            continue
        path, colon, sections = part.partition(":")
        if path.strip().endswith(".md"):
            assert path == "README.md" or path.startswith("docs/vendors/"), f"{where}: {cited}"
            page = REPO / path
            assert page.is_file(), f"{where}: {path}"
        else:
            assert page is not None and not colon, f"{where}: {cited}"
            sections = part
        if sections.strip() and page.parent == VENDOR_DOCS:
            missing = {s.strip() for s in sections.split(",")} - headings(page)
            assert not missing, f"{where}: {page.name} has no heading {sorted(missing)}"


def test_x_sources_cite_pages_in_the_repository_and_their_sections() -> None:
    """Every ``x-source`` (and ``x-no-webhook-source``) names a page inside the repository,
    down to its heading, or a public URL; every vendor's contract cites its own page at the
    top. Reads ``docs/vendors/``, never anything beside the checkout."""
    assert VENDOR_DOCS.is_dir()
    for name in NAMES:
        document = contracts.load(name).document
        for at, node in walk(document):
            if at.endswith(("/x-source", "/x-no-webhook-source")):
                check_citation(f"{name}{at}", str(node))
        slug = document.get("x-vendor")
        if slug in load_all():
            top = str(document["info"]["x-source"])
            assert f"docs/vendors/{slug}.md" in top and "https://" in top, f"{name}: {top}"


def test_status_words_are_enums() -> None:
    pixazo = contracts.load("pixazo").resolved["components"]["schemas"]["StatusWord"]
    assert pixazo["enum"] == ["QUEUED", "PROCESSING", "COMPLETED", "FAILED", "ERROR"]
    apiframe = contracts.load("apiframe").resolved["components"]["schemas"]["StatusWord"]
    assert set(apiframe["enum"]) == {"QUEUED", "PROCESSING", "COMPLETED", "FAILED"}
    gmi = contracts.load("gmicloud").resolved["components"]["schemas"]["StatusWord"]
    assert {"queued", "processing", "success", "failed"} <= set(gmi["enum"])
    fal = contracts.load("fal").resolved["components"]["schemas"]
    assert fal["StatusWord"]["enum"] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert [v["properties"]["status"]["const"] for v in fal["Status"]["oneOf"]] == [
        "IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    runflow = contracts.load("runflow").resolved["components"]["schemas"]["StatusCode"]
    assert set(runflow["enum"]) == {"queued", "dispatching", "running", "succeeded",
                                    "partial_succeeded", "failed", "cancelled"}


def status_enum(slug: str) -> list[str]:
    """The enum of the one schema vendor ``slug``'s contract marks ``x-status-words: true``."""
    contract = contracts.for_vendor(slug)
    assert contract is not None, f"{slug} has no contract"
    schemas = contract.resolved["components"]["schemas"]
    marked = [name for name, schema in schemas.items() if schema.get("x-status-words")]
    assert len(marked) == 1, f"{slug}: mark its status-word schema x-status-words: true"
    return list(schemas[marked[0]]["enum"])


def check_status_words(slug: str) -> None:
    """Every status word adapter ``slug`` shows (its ``status_words`` table, one word for each
    core status) is in its contract's status-word enum, and with its ``other_words`` (words
    shown only on a ``word`` fault) they are the whole enum."""
    from emulator.core.jobs import JobStatus

    adapter = load_all()[slug]
    words = adapter.status_words
    assert set(words) == set(JobStatus), f"{slug}.status_words misses a core status"
    assert set(words.values()) <= set(status_enum(slug)), slug
    # The words it does not show on its own complete the enum, each with its meaning.
    assert set(words.values()) | set(adapter.other_words) == set(status_enum(slug)), slug
    assert not set(words.values()) & set(adapter.other_words), slug
    contract = contracts.for_vendor(slug)
    assert contract is not None and contract.status_words == tuple(status_enum(slug))


@pytest.mark.parametrize("slug", sorted(load_all()))
def test_every_status_word_an_adapter_shows_is_in_its_enum(slug: str) -> None:
    check_status_words(slug)


def test_contracts_are_found_from_an_env_directory(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "only.yaml").write_text(contracts.text("pixazo").replace(
        "x-vendor: pixazo", "x-vendor: only"), encoding="utf-8")
    monkeypatch.setenv(contracts.ENV_DIR, str(tmp_path))
    assert contracts.contracts_dir() == tmp_path
    assert contracts.names() == ["only"]
    assert contracts.load("only").vendor == "only"


def test_unknown_contract_names_are_refused() -> None:
    for name in ("nope", "../pyproject", "PIXAZO"):
        with pytest.raises(contracts.ContractError):
            contracts.path_of(name)


def test_contracts_validate_command_passes_the_shipped_contracts(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``rmbg-emulator contracts validate`` (the pre-commit hook): every contract, exit 0."""
    from emulator.cli import main

    assert main(["contracts", "validate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == NAMES
    assert all(": ok (" in line for line in lines)


def test_contracts_validate_command_fails_on_an_invalid_contract(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A document that loads but is not OpenAPI 3.1 (``info`` without ``title``), a file that
    is not an OpenAPI document, and an unknown name: exit 1, one message each."""
    from emulator.cli import main

    pixazo = contracts.text("pixazo")
    (tmp_path / "good.yaml").write_text(pixazo, encoding="utf-8")
    untitled = re.sub(r"(?m)^  title: .*\n", "", pixazo, count=1)
    assert untitled != pixazo
    (tmp_path / "untitled.yaml").write_text(untitled, encoding="utf-8")
    (tmp_path / "notapi.yaml").write_text("just: yaml\n", encoding="utf-8")
    monkeypatch.setenv(contracts.ENV_DIR, str(tmp_path))
    assert main(["contracts", "validate"]) == 1
    captured = capsys.readouterr()
    assert "good: ok" in captured.out
    assert re.search(r"^untitled: invalid OpenAPI 3\.1 at /info: .title. is a required "
                     r"property$", captured.err, re.MULTILINE), captured.err
    assert "notapi: invalid:" in captured.err and "not an OpenAPI document" in captured.err
    assert main(["contracts", "validate", "good", "nope"]) == 1
    assert "nope: invalid: no contract 'nope'" in capsys.readouterr().err
