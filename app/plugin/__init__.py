"""`kubectl svcscope`: find the svcscope release in a cluster and keep a port-forward to it alive.

Installed with the package as the executable ``kubectl-svcscope``, which kubectl runs for ``kubectl svcscope``
(kubectl passes a plugin only the arguments after its name, so ``--kubeconfig``, ``--context`` and ``-n`` are
the plugin's own flags, handed on to every kubectl it runs; KUBECONFIG works as it does for kubectl).

Modules: ``kubectl`` (the kubectl command lines and their errors), ``release`` (which Service is the
dashboard, from kubectl's JSON: pure), ``supervise`` (the port-forward, its health, restarts with a bounded
backoff), ``cli`` (the command line). Standard library only, and nothing of the dashboard itself: a user's
machine needs kubectl and Python, not the web app's dependencies (an import-linter contract keeps it so).
"""

from __future__ import annotations


class PluginError(Exception):
    """Something the user can fix; the message says what and names the flag."""
