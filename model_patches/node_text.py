"""Text shown on a node in ComfyUI's frontend (the sampler's skip report, the calibration's saved path).

Uses `PromptServer.instance.send_progress_text(text, node_id[, sid])` and the executing node's id from
`comfy_execution.utils.get_executing_context()`; both are looked up, never assumed, so without a
server (library mode, tests, scripts) or in a ComfyUI that lacks either, nothing is sent and nothing
fails. The log line stays the record of every run; this is a convenience on top of it."""
from __future__ import annotations

import inspect
import logging
import sys
from typing import Optional

log = logging.getLogger("MagCache")

MAX_CHARS = 2000  # a node's text box, not a log: a longer text is cut


def executing_node_id() -> Optional[str]:
    """The id of the node ComfyUI is executing in this context (the sampler, during sampling), or None."""
    utils = sys.modules.get("comfy_execution.utils")
    get = getattr(utils, "get_executing_context", None)
    try:
        context = get() if callable(get) else None
    except Exception:
        return None
    node_id = getattr(context, "node_id", None)
    return str(node_id) if node_id is not None else None


def _prompt_server():
    server = sys.modules.get("server")  # ComfyUI's server module, imported only when a server runs
    return getattr(getattr(server, "PromptServer", None), "instance", None)


def show(text: str, node_id: Optional[str] = None) -> bool:
    """Show `text` on node `node_id` (default: the executing node) in the UI of the client that
    queued the prompt. Returns whether it was sent."""
    instance = _prompt_server()
    send = getattr(instance, "send_progress_text", None)
    node_id = node_id if node_id is not None else executing_node_id()
    if not callable(send) or node_id is None:
        return False
    text = text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + "..."
    try:
        params = inspect.signature(send).parameters
    except (TypeError, ValueError):
        params = {}
    try:
        if "sid" in params:  # only to the client that queued the prompt (None: every client)
            send(text, node_id, sid=getattr(instance, "client_id", None))
        else:
            send(text, node_id)
    except Exception as e:  # the UI is a convenience: it never breaks a generation
        log.debug("MagCache: could not show text on node %s: %s", node_id, e)
        return False
    return True
