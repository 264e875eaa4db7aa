"""MagCache under raylight (komikndr/raylight) on real ComfyUI: 2 or 4 CPU processes over gloo, each a
rank as raylight's workers set it up (tests/integration/raylight_rank.py), against one process.

Per layout (Ulysses 2, ring 2, CFG parallel 2, Ulysses 2 x CFG 2) and family (Wan2.1, Qwen-Image), with a
table and with self-calibration: every rank skips the steps one process skips, its output is one
process's MagCache output within float noise (the noise bound: raylight's own difference to one process
without MagCache, from its token padding and the split attention, measured in the same run), the ratios
every rank measures are one process's, and nothing deadlocks (a timeout fails the test).

Needs raylight's source (MAGCACHE_RAYLIGHT_SRC, set by scripts/comfyui.py from MAGCACHE_RAYLIGHT_ARCHIVES)
and xfuser 0.4.5 / yunchang in the venv (scripts/comfyui.py installs them). Without them the tests skip,
unless MAGCACHE_REQUIRE_RAYLIGHT=1 (CI): then they fail."""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
TIMEOUT = 600  # seconds for all processes of one layout; a deadlock fails the test here
STEPS = 10
# Ours: settings that skip several steps of these tiny random models (no published setting applies).
CASES = {
    "wan_t2v": dict(table="wan2.1_t2v_1.3B", settings=[0.3, 0.2, 3], latent=[1, 16, 3, 14, 14]),  # 147 tokens: padded
    "qwen_image": dict(table="qwen_image", settings=[0.3, 0.2, 3], latent=[1, 16, 1, 18, 14]),  # 63 tokens: padded
}
LAYOUTS = {"ulysses2": (2, 1, 1), "ring2": (1, 2, 1), "cfg2": (1, 1, 2), "ulysses2_cfg2": (2, 1, 2)}


def raylight_src() -> str | None:
    src = os.environ.get("MAGCACHE_RAYLIGHT_SRC")
    ok = src and Path(src, "raylight", "__init__.py").is_file()
    ok = ok and all(importlib.util.find_spec(m) is not None for m in ("xfuser", "yunchang", "cloudpickle"))
    if not ok and os.environ.get("MAGCACHE_REQUIRE_RAYLIGHT") == "1":
        pytest.fail("MAGCACHE_REQUIRE_RAYLIGHT=1 but raylight's source (MAGCACHE_RAYLIGHT_SRC) or xfuser / yunchang / "
                    "cloudpickle is missing: run through scripts/comfyui.py with MAGCACHE_RAYLIGHT_ARCHIVES")
    return src if ok else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp: Path, family: str, degrees=(1, 1, 1), src: str | None = None) -> tuple[list[dict], float]:
    """Run every rank of one layout (degrees: ulysses, ring, cfg); their results and the wall time."""
    ulysses, ring, cfg = degrees
    world = ulysses * ring * cfg
    out = tmp / f"{family}-{ulysses}-{ring}-{cfg}"
    out.mkdir()
    job = dict(CASES[family], family=family, ulysses=ulysses, ring=ring, cfg=cfg, steps=STEPS, cfg_scale=3.0,
               out=str(out), user_dir=str(out / "user"), raylight_src=src)
    (out / "job.json").write_text(json.dumps(job))
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(world),
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, str(HERE / "raylight_rank.py"), str(out / "job.json")],
                              env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stdout=open(out / f"log{r}.txt", "w"),
                              stderr=subprocess.STDOUT) for r in range(world)]
    try:
        for p in procs:
            p.wait(timeout=max(1.0, TIMEOUT - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"{family} {degrees}: not finished in {TIMEOUT} s (deadlock?); logs in {out}")
    wall = time.monotonic() - t0
    for r, p in enumerate(procs):
        if p.returncode:
            pytest.fail(f"{family} {degrees}: rank {r} failed:\n{(out / f'log{r}.txt').read_text()[-3000:]}")
    return [torch.load(out / f"rank{r}.pt") for r in range(world)], wall


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, no raylight: the reference of every layout, per family."""
    tmp = tmp_path_factory.mktemp("single")
    return {family: launch(tmp, family)[0][0] for family in CASES}


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("family", list(CASES))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_ranks_decide_and_measure_as_one_process(single, tmp_path, family, layout):
    src = raylight_src()
    if src is None:
        pytest.skip("raylight's source or xfuser / yunchang not installed (scripts/comfyui.py installs them)")
    ref = single[family]
    ranks, wall = launch(tmp_path, family, LAYOUTS[layout], src)
    for run in ("table_run", "selfcal_run"):
        assert ref[run]["off"] is None and ref[run]["skipped"].get(0), (run, ref[run])  # the reference skips
    noise = max(max_diff(r["plain"], ref["plain"]) for r in ranks)  # raylight's own, without MagCache
    report = {}
    for r in ranks:
        for run in ("table_run", "selfcal_run"):
            assert r[run]["off"] is None, (r["rank"], run, r[run]["off"])
            assert r[run]["skipped"] == ref[run]["skipped"], (r["rank"], run)
        assert r["measure_run"]["off"] is None
        assert r["ratios"] == pytest.approx(ref["ratios"], rel=1e-3, abs=1e-4), r["rank"]
        report["ratios"] = max([report.get("ratios", 0.0)] + [abs(a - b) for a, b in zip(r["ratios"], ref["ratios"])])
        for out in ("table", "selfcal", "measured"):
            d = max_diff(r[out], ref[out])
            assert d <= 4 * noise + 1e-5, (r["rank"], out, d, noise)
            report[out] = max(report.get(out, 0.0), d)
    print(f"\nraylight {layout} {family}: skipped table {ref['table_run']['skipped']}, self-calibrated "
          f"{ref['selfcal_run']['skipped']}; max|diff| to one process: table {report['table']:.2g}, self-calibrated "
          f"{report['selfcal']:.2g}, raylight without MagCache {noise:.2g}; "
          f"measured ratios max|diff| {report['ratios']:.2g}; "
          f"{len(ranks)} processes {wall:.1f} s")


class FakeActor:
    """What RayMagCache uses of a raylight RayWorker: model_function_runner.remote(fn) replaces the actor's
    patcher by fn(patcher) (raylight/distributed_worker/ray_worker.py)."""

    def __init__(self, model):
        self.model = model
        self.model_function_runner = self

    def remote(self, fn, *args, **kwargs):
        self.model = fn(self.model, *args, **kwargs)
        return "done"


def test_node_applies_magcache_in_every_actor_from_the_packs_folder(comfy, monkeypatch):
    """RayMagCache sends each actor a function pickled by value that loads this pack from its folder (under the
    name it has in ComfyUI's process; here a fresh name, as an actor that never loaded it) and runs the MagCache
    node there: the actors' models skip what MagCache on one process skips, with the same output."""
    cloudpickle = pytest.importorskip("cloudpickle")
    import functools
    import types

    from comfyui_magcache import nodes_raylight
    from harness import conds, sample, tiny_model

    settings = ("wan2.1_t2v_1.3B", *CASES["wan_t2v"]["settings"], 0, -1)
    with pytest.raises(ValueError, match="magcache_K"):  # bad settings fail before any actor is reached
        nodes_raylight.RayMagCache.execute({"workers": []}, settings[0], 0.3, 0.2, 9)
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(get=lambda futures: futures))
    actors = {"workers": [FakeActor(tiny_model("wan_t2v")) for _ in range(2)]}
    assert nodes_raylight.RayMagCache.execute(actors, *settings).result[0] is actors
    fn = nodes_raylight.actor_function(*settings)
    fresh = cloudpickle.dumps(functools.partial(fn.func, **dict(fn.keywords, package="magcache_in_actor")))
    # by value: a process where no module of this pack is importable unpickles it
    check = "import cloudpickle, sys; f = cloudpickle.loads(sys.stdin.buffer.read()); print(f.func.__name__)"
    seen = subprocess.run([sys.executable, "-c", check], input=fresh, capture_output=True, cwd="/", timeout=120)
    assert seen.stdout.strip() == b"in_actor", seen.stderr[-2000:]
    fresh = cloudpickle.loads(fresh)
    monkeypatch.delitem(sys.modules, "magcache_in_actor", raising=False)
    in_actor = fresh(tiny_model("wan_t2v"))
    assert type(in_actor.model_options["transformer_options"]["magcache"]).__module__.startswith("magcache_in_actor.")
    pos, neg = conds("wan_t2v")
    one = comfy.MagCache.execute(tiny_model("wan_t2v"), *settings).result[0]
    kw = dict(seed=1, steps=STEPS, cfg=3.0, latent_shape=tuple(CASES["wan_t2v"]["latent"]))
    want = sample(one, pos, neg, **kw)
    assert not torch.equal(want, sample(tiny_model("wan_t2v"), pos, neg, **kw))  # MagCache skipped steps
    for model in [a.model for a in actors["workers"]] + [in_actor]:
        assert torch.equal(sample(model, pos, neg, **kw), want)
    for name in [m for m in sys.modules if m == "magcache_in_actor" or m.startswith("magcache_in_actor.")]:
        monkeypatch.delitem(sys.modules, name)


def test_node_is_registered_only_where_raylight_is_installed(comfy, monkeypatch, tmp_path):
    import folder_paths
    from comfyui_magcache import nodes_raylight

    monkeypatch.setattr(nodes_raylight.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(folder_paths, "get_folder_paths", lambda kind: [str(tmp_path)])
    assert nodes_raylight.raylight_nodes() == []
    (tmp_path / "raylight" / "src" / "raylight").mkdir(parents=True)
    (tmp_path / "raylight" / "src" / "raylight" / "__init__.py").write_text("")
    assert nodes_raylight.raylight_nodes() == [nodes_raylight.RayMagCache]
    schema = nodes_raylight.RayMagCache.define_schema()
    assert [i.id for i in schema.inputs] == ["ray_actors", "model_type", "magcache_thresh", "retention_ratio",
                                             "magcache_K", "start_step", "end_step", "settings_from"]
    assert all(i.tooltip for i in schema.inputs)


def test_ray_actors_get_magcache_from_the_node(comfy):
    """Smoke run with real Ray actors (CPU): the node reaches each actor's model through Ray, and each samples
    what MagCache samples in this process."""
    try:
        import ray
    except ImportError:
        if os.environ.get("MAGCACHE_REQUIRE_RAYLIGHT") == "1":
            pytest.fail("MAGCACHE_REQUIRE_RAYLIGHT=1 but Ray is not installed (scripts/comfyui.py installs it)")
        pytest.skip("Ray is not installed (scripts/comfyui.py installs it)")
    from comfyui_magcache import nodes_raylight
    from harness import COMFYUI, conds, sample, tiny_model
    from tiny_ray_worker import TinyWorker

    settings = ("wan2.1_t2v_1.3B", *CASES["wan_t2v"]["settings"], 0, -1)
    kw = dict(seed=1, steps=STEPS, cfg=3.0, latent_shape=tuple(CASES["wan_t2v"]["latent"]))
    pos, neg = conds("wan_t2v")
    want = sample(comfy.MagCache.execute(tiny_model("wan_t2v"), *settings).result[0], pos, neg, **kw)
    path = [str(HERE), str(HERE.parent), str(HERE.parents[1] / "scripts"), os.environ.get("PYTHONPATH", "")]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, path))}})
    try:
        actor = ray.remote(num_cpus=1)(TinyWorker)
        workers = [actor.remote(str(COMFYUI), "wan_t2v") for _ in range(2)]
        nodes_raylight.RayMagCache.execute({"workers": workers}, *settings)
        outs = ray.get([w.sample.remote(kw) for w in workers], timeout=TIMEOUT)
    finally:
        ray.shutdown()
    assert all(torch.equal(out, want) for out in outs)
