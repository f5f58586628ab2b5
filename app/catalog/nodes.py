"""Whether a probe pod can be pinned to a node, checked against the watched Nodes before a run starts.

The apiserver accepts a pod with any ``spec.nodeName``: pinned to a name no kubelet answers to, the pod
stays Pending without a single condition until its deadline. When svcscope watches Nodes it knows every
name, so such a run is refused at once with the names that do exist. When it does not (no RBAC for Nodes,
``SVCSCOPE_WATCH_NODES=false``) or has not listed them yet, the run goes ahead and the probe pod's silence
tells (``app.kube.actions``).
"""

from __future__ import annotations

from app.kube.cache import ServiceCache

NAMES_SHOWN = 10  # of the existing nodes, in the refusal: enough to spot a typo, bounded for big clusters


def unknown_node(cache: ServiceCache, name: str) -> str | None:
    """Why no probe pod can run on node ``name`` (no Node has that name), or None: it exists, or the
    Nodes are not known here (not watched, not listed yet, or listed as none: a cluster always has the
    dashboard's own node, so an empty list says nothing)."""
    names = sorted(n.name for n in cache.nodes())
    if cache.nodes_unknown() is not None or not names or name in names:
        return None
    shown = ", ".join(names[:NAMES_SHOWN]) or "none"
    if len(names) > NAMES_SHOWN:
        shown += f" and {len(names) - NAMES_SHOWN} more"
    return (
        f"node {name!r} does not exist (nodes: {shown}): a probe pod pinned to it would never start. "
        "Pick one of these, or leave the node empty to let the scheduler choose."
    )
