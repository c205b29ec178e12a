"""How a lab's services run. Today: local processes (`LocalRuntime`). The manifest
describes services abstractly (an Envoy with a config, a Python module, a command), so a
Docker runtime can be added beside this one without touching the labs."""

from meshlab.runtime.local import LocalRuntime, RunState, ServiceState, read_state, stop_orphaned_runs, stop_run

__all__ = ["LocalRuntime", "RunState", "ServiceState", "read_state", "stop_orphaned_runs", "stop_run"]
