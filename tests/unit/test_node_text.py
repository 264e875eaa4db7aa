"""Text on a node in ComfyUI's frontend: sent only where a server and an executing node exist, never
breaking anything otherwise; and the wording helpers that keep echoed values short."""
import sys
import types

import pytest
from comfyui_magcache.magcache import MagCacheConfig
from comfyui_magcache.magcache.config import MagCacheConfigError
from comfyui_magcache.magcache.text import clip, show
from comfyui_magcache.model_patches import ALL_SPECS, node_text
from comfyui_magcache.model_patches.engine import Run, Settings, run_report


class FakePromptServer:
    def __init__(self, with_sid=True, fail=False):
        self.sent, self.fail, self.client_id = [], fail, "client-1"
        if not with_sid:
            self.send_progress_text = self._send_no_sid

    def send_progress_text(self, text, node_id, sid=None):
        if self.fail:
            raise RuntimeError("socket closed")
        self.sent.append((text, node_id, sid))

    def _send_no_sid(self, text, node_id):
        self.sent.append((text, node_id, "no sid parameter"))


@pytest.fixture
def comfy_server(monkeypatch):
    """Stand-ins for ComfyUI's `server` module and `comfy_execution.utils`, as a running server has them."""
    def install(instance, node_id="7"):
        server = types.ModuleType("server")
        server.PromptServer = type("PromptServer", (), {"instance": instance})
        utils = types.ModuleType("comfy_execution.utils")
        context = types.SimpleNamespace(prompt_id="p", node_id=node_id, list_index=None)
        utils.get_executing_context = lambda: context if node_id is not None else None
        monkeypatch.setitem(sys.modules, "server", server)
        monkeypatch.setitem(sys.modules, "comfy_execution.utils", utils)
        return instance
    return install


def test_text_goes_to_the_executing_node_of_the_client_that_queued(comfy_server):
    srv = comfy_server(FakePromptServer())
    assert node_text.show("MagCache: skipped 3/8 steps") is True
    assert srv.sent == [("MagCache: skipped 3/8 steps", "7", "client-1")]
    assert node_text.show("to another node", node_id="12") and srv.sent[-1][1] == "12"


def test_a_server_without_the_sid_parameter_still_gets_the_text(comfy_server):
    srv = comfy_server(FakePromptServer(with_sid=False))
    assert node_text.show("hello") and srv.sent == [("hello", "7", "no sid parameter")]


def test_no_server_no_node_or_a_failing_send_is_silent(comfy_server, monkeypatch):
    monkeypatch.delitem(sys.modules, "server", raising=False)
    assert node_text.show("nobody listens") is False  # library mode, scripts
    srv = comfy_server(FakePromptServer(), node_id=None)
    assert node_text.show("no node executing") is False and srv.sent == []
    comfy_server(FakePromptServer(fail=True))
    assert node_text.show("send fails") is False
    server = types.ModuleType("server")  # a module named server that is not ComfyUI's
    monkeypatch.setitem(sys.modules, "server", server)
    assert node_text.show("other server module") is False


def test_long_text_is_cut(comfy_server):
    srv = comfy_server(FakePromptServer())
    node_text.show("x" * 10_000)
    assert len(srv.sent[0][0]) <= node_text.MAX_CHARS + 3


def test_run_report_names_the_table_or_why_caching_was_off():
    flux = next(s for s in ALL_SPECS if s.name == "Flux")
    run = Run(Settings(flux, MagCacheConfig(), "flux"))
    run.state.calls, run.state.computed_calls = 20, 7
    run.state.table_names.append("flux")  # as RunState.decide records the tables it reads
    assert run_report(run) == "MagCache: skipped 0/0 steps (), est. 2.9x, table flux"
    off = Run(Settings(flux, MagCacheConfig(), "flux"))
    off.state.disable("the schedule is degenerate")
    assert run_report(off) == "MagCache: skipped 0 steps (caching was off: the schedule is degenerate)"


def test_show_keeps_any_value_short():
    assert show("abc") == "'abc'" and show(0.5) == "0.5" and show(None) == "None" and show(True) == "True"
    assert show("x" * 5_000_000).endswith("... (5000000 characters)") and len(show("x" * 5_000_000)) < 120
    assert show(10 ** 400) == "a number with about 401 digits"
    assert show([[[[]]]]) == "a list of 1 items" and show({"a": 1}) == "an object with 1 keys"
    assert show(object()) == "a value of type object"
    assert clip("abc", 2) == "ab... (3 characters)"


@pytest.mark.parametrize("field, value", [("thresh", 10 ** 400), ("thresh", "x" * 5_000_000), ("K", 10 ** 400),
                                          ("retention_ratio", [0.2] * 1000)])
def test_settings_errors_never_echo_huge_values(field, value):
    with pytest.raises(MagCacheConfigError) as e:
        MagCacheConfig(**{field: value})
    assert len(str(e.value)) <= 200
