"""Abort only what was queued before a failed cell, not a request sent once its error reply arrived.

Loaded in every sentinel kernel by the flight recorder (``autopsy/recorder.py``), guard and checkpoints on
or off. It reorders two steps of ipykernel 7's own ``execute_request``; nothing else of ipykernel changes.
"""

from __future__ import annotations

import threading
from typing import Any


def close_abort_window(kernel: Any) -> Any:
    """Abort only what was queued before an error, not a request sent once its reply arrived; return the undo.

    ipykernel 7 (a shell channel thread) sends a failed cell's error reply and only then, in ``_abort_queues``,
    marks the queue aborting and asks the shell channel thread to post the "stop aborting" marker behind
    what is queued. Sending the reply wakes the shell channel thread; on a busy machine the scheduler runs it
    (and ZeroMQ's I/O thread) in place of the main thread, which keeps waiting, runnable, for a CPU until the
    reply is out, the client has answered and its next request has been queued ahead of the marker: that
    request, sent after the error, is aborted (measured in stock ipykernel 7.4 too: ~10-25% of requests sent
    the instant an error reply arrived, on 2 cores under load; see ``tests/test_abort_window.py``).

    Here the same ``_abort_queues`` runs just before the reply is sent (from ``finish_metadata``, the
    kernel's last step before it), and ipykernel's own call after the send is skipped: the marker is then
    scheduled on the shell channel thread before the reply can leave, so it is queued ahead of any request
    a client sends in answer to that reply. Requests already queued when the cell failed (Run All) are
    aborted as before. Kernels without a shell channel thread (ipykernel 6) are left as they are.
    """
    if kernel is None or not callable(getattr(kernel, "_abort_queues", None)) \
            or not callable(getattr(kernel, "finish_metadata", None)):
        return None
    original_abort = kernel._abort_queues
    original_finish = kernel.finish_metadata
    done_early: dict[Any, bool] = {}  # subshell id -> its queue was aborted before the error reply went out

    def finish_metadata(parent: Any, metadata: Any, reply_content: Any) -> Any:
        result = original_finish(parent, metadata, reply_content)
        try:
            channel_thread = getattr(kernel, "shell_channel_thread", None)
            header = parent.get("header") or {}
            if channel_thread and header.get("msg_type") == "execute_request" \
                    and threading.current_thread() is not channel_thread:
                content = parent.get("content") or {}
                subshell_id = header.get("subshell_id")
                early = (reply_content.get("status") == "error" and not content.get("silent", False)
                         and content.get("stop_on_error", True))
                done_early[subshell_id] = False
                if early:
                    original_abort(subshell_id)
                    done_early[subshell_id] = True
        except Exception:
            pass
        return result

    def _abort_queues(subshell_id: Any = None) -> Any:
        if done_early.pop(subshell_id, False):
            return None  # done just before the reply was sent
        return original_abort(subshell_id)

    kernel.finish_metadata = finish_metadata  # instance attributes over the methods; the undo removes them
    kernel._abort_queues = _abort_queues

    def reopen() -> None:
        for name, ours in (("finish_metadata", finish_metadata), ("_abort_queues", _abort_queues)):
            if kernel.__dict__.get(name) is ours:
                delattr(kernel, name)

    return reopen
