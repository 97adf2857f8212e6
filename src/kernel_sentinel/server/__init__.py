"""The Jupyter server extension: every kernel the server starts is watched, and its deaths explained.

Enabled by installing the package (``etc/jupyter/jupyter_server_config.d/kernel_sentinel.json``). It adds
``/api/kernel-sentinel/deaths`` and ``/api/kernel-sentinel/kernels/ID``, emits one ``kernel_death`` event
(schema ``https://events.kernel-sentinel.dev/kernel_death``) per death, and puts deaths, memory errors and
each kernel's memory and budget on the server's ``/metrics``. Nothing here can stop the server: a failure
to load is logged and the server runs on without it.
"""

from __future__ import annotations

from typing import Any

from .. import __version__  # jupyter_server shows it in `extension list` and on /metrics

__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Return the extension's entry for jupyter_server (this module, loaded by ``_load_jupyter_server_extension``)."""
    return [{"module": "kernel_sentinel.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Register the event schema, add the REST handlers, start watching the server's kernels."""
    try:
        from ..store import home_dir
        from .events import event_schema
        from .handlers import handlers
        from .watch import KernelWatch

        watch = KernelWatch(serverapp, home_dir())
        serverapp.event_logger.register_event_schema(event_schema())
        serverapp.web_app.add_handlers(".*$", handlers(serverapp.base_url, watch))
        watch.start()
        serverapp.web_app.settings["kernel_sentinel_watch"] = watch
        serverapp.log.info("kernel-sentinel: watching every kernel (REST at %sapi/kernel-sentinel/)", serverapp.base_url)
    except Exception as exc:  # the server must come up without us rather than not at all
        serverapp.log.error("kernel-sentinel: the server extension is off: %s", exc)
    _start_forwarder(serverapp)


def _start_forwarder(serverapp: Any) -> None:
    """With a shared database configured, forward this server's outbox from here, pooled and retried (fleet)."""
    try:
        from ..fleet.forward import Forwarder

        forwarder = Forwarder().start()  # does nothing without KERNEL_SENTINEL_DATABASE_URL
        if forwarder.alive:
            serverapp.web_app.settings["kernel_sentinel_forwarder"] = forwarder
            serverapp.log.info("kernel-sentinel: forwarding records to the shared database")
    except Exception as exc:  # each writer still starts a forwarder of its own: records only wait longer
        serverapp.log.warning("kernel-sentinel: no forwarding thread in the server: %s", exc)
