"""Which of Envoy's clusters lead to a service, whatever the learner named them.

    clusters = clusters_reaching(lab.envoy(), lab.port("app"), what="the app")

Checks find a learner's cluster by its endpoint, never by its name, and fail with the
clusters Envoy does have when none leads there.
"""

from __future__ import annotations

from meshlab.envoy import Admin
from meshlab.grading.failures import fail


def clusters_reaching(admin: Admin, port: int, *, what: str, hint: str | None = None) -> list[str]:
    """The clusters with an endpoint at 127.0.0.1:PORT (WHAT names it for the learner:
    "the app"); the check fails, listing Envoy's clusters, when there is none."""
    clusters = admin.clusters_reaching(port)
    if not clusters:
        fail(f"no cluster of Envoy has {what} as an endpoint",
             expected=f"a cluster with endpoint 127.0.0.1:{port}",
             received="clusters: " + (", ".join(sorted({h.cluster for h in admin.hosts()})) or "none"), hint=hint)
    return clusters
