"""How a lab's services run. Today: local processes (`LocalRuntime`). The manifest
describes services abstractly (an Envoy with a config, a Python module, a command), so a
Docker runtime can be added beside this one without touching the labs."""

__all__ = ["LocalRuntime", "RunState", "ServiceState", "kept_by_owner", "read_state", "stop_orphaned_runs",
           "stop_run"]


def __getattr__(name: str):
    # Loaded when first asked for: `meshlab.runtime.processes` alone (what the CLI needs
    # to run a checker) must not import the local runtime, its pods and Envoy's client.
    if name in __all__:
        from meshlab.runtime import local

        return getattr(local, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
