"""Domain errors map to HTTP statuses in app.web.errors, and nowhere else."""

from __future__ import annotations

import pytest

from app.kube.actions import ActionError, Refusal
from app.probe.spec import RunLimitError, SpecError
from app.probe.targets import ForbiddenAddress, NotProbeable, TargetError, UnknownPort, UnknownService
from app.web.errors import http_error


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UnknownService("Service demo/nope is not known"), 404),
        (ForbiddenAddress("the apiserver is never probed"), 403),
        (UnknownPort("no port named 'x'"), 422),
        (NotProbeable("headless"), 422),
        (TargetError("refused"), 422),
        (SpecError("count must be between 1 and 10"), 422),
        (RunLimitError("4 probe runs are active"), 429),
        (ActionError("may not patch", Refusal.FORBIDDEN), 403),
        (ActionError("not found", Refusal.NOT_FOUND), 404),
        (ActionError("conflict", Refusal.CONFLICT), 409),
        (ActionError("invalid", Refusal.INVALID), 422),
        (ActionError("no answer"), 502),
    ],
)
def test_domain_error_status(error: Exception, status: int) -> None:
    answer = http_error(error)
    assert answer.status_code == status
    assert answer.detail == str(error)


def test_other_errors_are_not_mapped() -> None:
    with pytest.raises(TypeError):
        http_error(KeyError("x"))
