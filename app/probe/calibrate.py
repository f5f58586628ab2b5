"""Before a run without an identity rule: probe each pod directly (pod IP:targetPort) to learn how its
replies can be told apart — by the pod naming itself, by a stable content fingerprint, or not at all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from dataclasses import dataclass

from app.probe import wire
from app.probe.attribution import Fingerprints
from app.probe.engine import Dial, exchange_once
from app.probe.run import AttributionMode, Run
from app.probe.targets import Backend, ClusterView, TargetError, direct_target

# Every pod of a Service at Kubernetes' per-Service endpoint threshold (250: beyond it the Endpoints object
# is truncated); beyond this the note says how many were probed. At most CALIBRATION_CONCURRENCY at once.
MAX_CALIBRATED_PODS = 256
CALIBRATION_CONCURRENCY = 32
ATTEMPTS = 2  # two replies per pod: a fingerprint must be stable
# A calibration is reused this long by runs asking the same of the same endpoints (same pods at the same
# addresses): probing every pod again before each run is most of the wait before the first bar.
REUSE_S = 30.0
MAX_REMEMBERED = 64


@dataclass(frozen=True, slots=True)
class _Remembered:
    at: float
    mode: AttributionMode
    note: str
    fingerprints: Fingerprints | None
    auto_ok: bool
    probed: tuple[tuple[str, str], ...]


_remembered: dict[Hashable, _Remembered] = {}


def forget() -> None:
    """Drop remembered calibrations (tests; a pod that changed its replies in place)."""
    _remembered.clear()


def _key(run: Run, pods: list[Backend]) -> Hashable:
    spec = run.spec
    endpoints = tuple(sorted((b.pod or "", b.ip, b.port) for b in pods))
    return (run.target.label, spec.protocol, spec.method, spec.path, spec.reuse, endpoints)


async def calibrate(run: Run, view: ClusterView, dial: Dial, *, now: float | None = None) -> None:
    cal = run.calibration
    probeable = [b for b in run.current() if b.directly_probeable and b.ready]
    pods = probeable[:MAX_CALIBRATED_PODS]
    if not pods:
        cal.mode = AttributionMode.AUTO
        cal.note = "no endpoint could be probed directly; automatic attribution only"
        return
    key = _key(run, pods)
    now = time.monotonic() if now is None else now
    seen = _remembered.get(key)
    if seen is not None and now - seen.at <= REUSE_S:
        cal.mode, cal.auto_ok, cal.probed = seen.mode, seen.auto_ok, dict(seen.probed)
        cal.fingerprints = seen.fingerprints
        cal.note = (
            f"{seen.note} (direct probes of {now - seen.at:.0f} s ago, same pods at the same addresses)"
        )
        return
    await _calibrate(run, view, dial, pods)
    if len(probeable) > len(pods):
        cal.note += (
            f"; {len(pods)} of {len(probeable)} pods probed directly (replies of the others are matched "
            "only by a pod name or IP in them)"
        )
    for old in [k for k, v in _remembered.items() if now - v.at > REUSE_S]:
        del _remembered[old]
    if len(_remembered) < MAX_REMEMBERED:
        _remembered[key] = _Remembered(
            now, cal.mode, cal.note, cal.fingerprints, cal.auto_ok, tuple(cal.probed.items())
        )


async def _calibrate(run: Run, view: ClusterView, dial: Dial, pods: list[Backend]) -> None:
    cal = run.calibration
    fps = Fingerprints()
    auto_hits = auto_wrong = 0

    slots = asyncio.Semaphore(CALIBRATION_CONCURRENCY)

    async def probe(b: Backend) -> None:
        async with slots:
            await probe_one(b)

    async def probe_one(b: Backend) -> None:
        nonlocal auto_hits, auto_wrong
        assert b.pod is not None
        try:
            ip, port = direct_target(view, run.target, b.ip)
        except TargetError as exc:
            cal.probed[b.pod] = f"not probed: {exc.message}"
            return
        for attempt in range(ATTEMPTS):
            try:
                async with asyncio.timeout(run.spec.timeout_s):
                    reply = await exchange_once(run, ip, port, attempt, dial)
            except Exception as exc:
                cal.probed[b.pod] = f"direct probe failed: {wire.classify(exc).kind}"
                return
            fps.add(b.pod, reply)
            found = run.pods_named_in(reply.text() + "\n" + "\n".join(v for _, v in reply.headers))
            if found == {b.pod}:
                auto_hits += 1
            elif found:
                auto_wrong += 1
        cal.probed[b.pod] = "ok"

    await asyncio.gather(*(probe(b) for b in pods))
    failed = sorted(
        {text.removeprefix("direct probe failed: ") for text in cal.probed.values() if text != "ok"}
    )
    if not fps.by_pod and failed:
        cal.mode = AttributionMode.AUTO
        hint = ""
        if "bad_response" in failed and run.spec.protocol.value == "HTTP":
            hint = ": the pods do not answer HTTP on this port (try TCP)"
        cal.note = (
            f"the direct probe of every pod failed ({', '.join(failed)}){hint}; automatic attribution only"
        )
        return
    if auto_wrong:
        cal.auto_ok = False
    if auto_hits and not auto_wrong:
        cal.mode, cal.note = AttributionMode.AUTO, "each pod names itself (pod name or IP) in its reply"
        return
    problem = fps.problem()
    cal.fingerprints = fps
    if problem is None:
        cal.mode = AttributionMode.FINGERPRINT
        cal.note = (
            f"replies carry no pod name, but each of {len(fps.by_pod)} pods answered directly with a "
            "stable reply distinct from the others: ClusterIP replies are matched by content"
        )
    else:
        cal.mode = AttributionMode.NONE
        cal.note = f"cannot attribute: no pod name or IP in the replies and {problem}"
    if auto_wrong:
        cal.note += "; automatic matching disabled (a pod's direct reply named another pod)"
