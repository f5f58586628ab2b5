"""The probe form offers a remote origin only where the runner would accept it, and says why not: the form
asks the runner's own check (the actions client's write policy), the one a POST meets."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.domain import Origin
from app.kube.actions import KubeActions, ProbePodConfig
from app.main import create_app
from app.probe.runner import ProbeRunner
from app.web.probes import RUN_TEMPLATES
from app.writepolicy import WritePolicy
from tests.unit.fakes import limits
from tests.unit.kube.objects import demo_cache, fill, pod
from tests.unit.web.sse import call

pytestmark = pytest.mark.timeout(30)
ORIGINS = (Origin.PROBE_POD, Origin.EXEC)


def dashboard(
    writable: set[str],
    probe_pod_namespace: str | None,
    pods: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> Iterator[TestClient]:
    cache = fill(demo_cache(), pods=pods)
    app = create_app(Settings(csrf_secret="test"), cache=cache, start_watchers=False)
    with TestClient(app, base_url="http://localhost") as c:
        # The real actions client's checks (no API call is made: the form and the runner only ask).
        actions = KubeActions(
            cast(Any, None),
            ProbePodConfig(image="svcscope:test", namespace=probe_pod_namespace),
            policy=WritePolicy.of(writable, probe_pod_namespace),
        )
        runner = ProbeRunner(cache, limits(), remote=actions, origins=ORIGINS)
        app.state.svc.probe_runner = runner
        yield c
        call(c, runner.aclose)


@pytest.fixture
def not_writable() -> Iterator[TestClient]:
    yield from dashboard({"svcscope"}, "svcscope")


@pytest.fixture
def writable() -> Iterator[TestClient]:
    yield from dashboard({"shop"}, "svcscope")


@pytest.fixture
def writable_elsewhere() -> Iterator[TestClient]:
    """The Service's namespace is not writable; another one, with a pod to exec into, is."""
    yield from dashboard({"tools"}, "svcscope", [pod("toolbox", "tools", ip="198.18.0.40")])


@pytest.fixture
def no_probe_pods() -> Iterator[TestClient]:
    yield from dashboard({"shop"}, None)


def options(page: str) -> dict[str, bool]:
    """origin -> offered (not disabled) in the probe form."""
    select = page.split('<select name="origin"')[1].split("</select>")[0]
    return {
        value: "disabled" not in attrs
        for value, attrs in re.findall(r'<option value="([^"]+)"([^>]*)>', select)
    }


def refusals(page: str) -> dict[str, str]:
    return {
        origin: " ".join(html.unescape(text).split())
        for origin, text in re.findall(r'<li data-origin="([^"]+)">(.*?)</li>', page, re.S)
    }


@pytest.mark.parametrize("path", ["/services/shop/web", "/probes/new?namespace=shop&service=web"])
def test_exec_is_not_offered_where_the_namespace_is_not_writable(not_writable: TestClient, path: str) -> None:
    page = not_writable.get(path).text
    assert options(page) == {"dashboard": True, "probe-pod": True, "exec": False}
    why = refusals(page)
    assert list(why) == ["exec"]
    assert "namespace shop is not writable" in why["exec"] and "writableNamespaces" in why["exec"]
    # The server refuses the same thing with the same words.
    body = {"namespace": "shop", "service": "web", "port": "http", "count": 5, "concurrency": 1}
    r = not_writable.post("/api/v1/probes", json={**body, "origin": "exec", "exec_pod": "web-0"})
    assert r.status_code == 403
    assert "namespace shop is not writable" in r.json()["detail"]


def test_every_origin_is_offered_where_the_runner_accepts_it(writable: TestClient) -> None:
    page = writable.get("/services/shop/web").text
    assert options(page) == {"dashboard": True, "probe-pod": True, "exec": True}
    assert refusals(page) == {} and 'data-testid="origin-refusals"' not in page


def test_exec_is_offered_when_another_namespace_is_writable(writable_elsewhere: TestClient) -> None:
    """The server execs into a pod of any writable namespace (exec_namespace), not only the Service's."""
    page = writable_elsewhere.get("/services/shop/web").text
    assert options(page) == {"dashboard": True, "probe-pod": True, "exec": True}
    assert refusals(page) == {}
    body = {"namespace": "shop", "service": "web", "port": "http", "count": 5, "concurrency": 1}
    # The Service's own namespace is still refused, with the namespaces that are writable ...
    r = writable_elsewhere.post("/api/v1/probes", json={**body, "origin": "exec", "exec_pod": "web-1"})
    assert r.status_code == 403 and "namespace shop is not writable (writable: tools;" in r.json()["detail"]
    # ... and the writable one passes the write check (then meets the next one: no such pod).
    r = writable_elsewhere.post(
        "/api/v1/probes", json={**body, "origin": "exec", "exec_namespace": "tools", "exec_pod": "gone"}
    )
    assert r.status_code == 422 and "tools/gone is not a watched running pod" in r.json()["detail"]


def test_probe_pods_without_a_namespace_for_them_are_not_offered(no_probe_pods: TestClient) -> None:
    page = no_probe_pods.get("/services/shop/web").text
    assert options(page) == {"dashboard": True, "probe-pod": False, "exec": True}
    assert "no namespace is set for probe pods" in refusals(page)["probe-pod"]


@pytest.mark.parametrize("path", ["/services/shop/web", "/probes/new?namespace=shop&service=web"])
def test_a_page_with_the_form_compiles_what_its_click_will_render(writable: TestClient, path: str) -> None:
    """The first click after a start would otherwise compile the run's templates while the user waits."""
    env = cast(Any, writable.app).state.templates.env
    assert not set(RUN_TEMPLATES) & {key[1] for key in env.cache.keys()}
    assert writable.get(path).status_code == 200
    assert set(RUN_TEMPLATES) <= {
        key[1] for key in env.cache.keys()
    }  # the response's background task ran before the client returned
