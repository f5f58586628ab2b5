"""Before a run without an identity rule: probe each pod directly (pod IP:targetPort) to learn how its
replies can be told apart — by the pod naming itself, by a stable content fingerprint, or not at all."""

from __future__ import annotations

import asyncio

from app.probe import wire
from app.probe.attribution import Fingerprints
from app.probe.engine import Dial, exchange_once
from app.probe.run import AttributionMode, Run
from app.probe.targets import Backend, ClusterView, TargetError, direct_target

MAX_CALIBRATED_PODS = 64
ATTEMPTS = 2  # two replies per pod: a fingerprint must be stable


async def calibrate(run: Run, view: ClusterView, dial: Dial) -> None:
    cal = run.calibration
    pods = [b for b in run.current() if b.directly_probeable and b.ready][:MAX_CALIBRATED_PODS]
    if not pods:
        cal.mode = AttributionMode.AUTO
        cal.note = "no endpoint could be probed directly; automatic attribution only"
        return
    fps = Fingerprints()
    auto_hits = auto_wrong = 0

    async def probe(b: Backend) -> None:
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
