"""The OpenAPI 3.1 document (maild/api/openapi.json, served at /v1/openapi.json): valid
(openapi-spec-validator), naming every route the server has, and true of the live server
(schemathesis with a real token: every response matches the document, none is 5xx)."""

from __future__ import annotations

import json
import re
from importlib import resources

import hypothesis
import pytest
import schemathesis
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import positive_data_acceptance

from maild.api.server import ApiResource
from tests.api.conftest import ALICE, Api
from tests.api.test_folders import deliver

DOCUMENT = json.loads(resources.files("maild.api").joinpath("openapi.json").read_text())


def test_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.1")


def test_document_names_every_route() -> None:
    documented = {(method.upper(), re.sub(r"\{[a-z]+\}", "{}", path))
                  for path, item in DOCUMENT["paths"].items() for method in item}
    source = resources.files("maild.api").joinpath("server.py").read_text()
    routes = {(m, re.sub(r"\(\?P<[a-z]+>[^)]*\)", "{}", p).replace("\\.", "."))
              for m, p in re.findall(r'r\(b"([A-Z]+)", r"([^"]+)"', source)}
    assert routes == documented
    assert ApiResource  # the module the routes are read from


def test_served_document_is_the_file(alice: Api) -> None:
    assert alice.ok("GET", "/v1/openapi.json", token="") == DOCUMENT


@pytest.mark.timeout(600)
def test_schemathesis_against_the_live_server(alice: Api) -> None:
    """Every operation with generated input, authenticated as a real user who has mail:
    no 5xx, and status codes, content types and bodies as the document says. Not checked:
    that every schema-valid request is accepted - a folder that exists, an address nobody
    has, a name with control characters are refused 4xx by rules a schema cannot state."""
    deliver(alice.server, ALICE, "fuzz me")
    base = f"http://127.0.0.1:{alice.server.ports['api']}"
    schema = schemathesis.openapi.from_url(f"{base}/v1/openapi.json")
    headers = {"Authorization": f"Bearer {alice.token}"}
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.settings(max_examples=10, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(hypothesis.HealthCheck),
                             phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
        @hypothesis.given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=base, headers=headers, timeout=30,
                                   excluded_checks=[positive_data_acceptance])
        try:
            check()
        except Exception as exc:  # collect every operation's first failure
            failures.append(f"{operation.label}: {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
