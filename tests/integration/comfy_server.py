"""A real ComfyUI server for the end-to-end tests: 127.0.0.1, a free port, a temporary base
directory with this pack linked into its custom_nodes, test-only nodes beside it, tiny checkpoints
and placeholder model files. Everything is removed when it stops, also after a failure."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "scripts" / "standins"

# Test-only nodes: conditioning without text encoders, decoding without a VAE, VACE conditioning
# without a VAE. Written into the temporary custom_nodes, never part of the pack.
TEST_NODES = '''
import torch
import node_helpers


class MagCacheTestConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tokens": ("INT", {"default": 8, "min": 1, "max": 512}),
                             "dim": ("INT", {"default": 4096, "min": 1, "max": 100000}),
                             "pooled": ("INT", {"default": 0, "min": 0, "max": 100000}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2**31})}}
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self, tokens, dim, pooled, seed):
        g = torch.Generator().manual_seed(seed)
        extra = {"pooled_output": torch.randn(1, pooled, generator=g)} if pooled else {}
        return ([[torch.randn(1, tokens, dim, generator=g), extra]],)


class MagCacheTestDecode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self, samples):
        x = samples["samples"].float()
        if x.ndim == 5:  # video: frames become the batch
            x = x.movedim(2, 1).flatten(0, 1)
        img = torch.sigmoid(x[:, :3]).repeat_interleave(8, -1).repeat_interleave(8, -2)
        return (img.movedim(1, -1).contiguous(),)


class MagCacheTestVaceToVideo:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "width": ("INT", {"default": 64, "min": 16, "max": 4096}),
                             "height": ("INT", {"default": 64, "min": 16, "max": 4096}),
                             "length": ("INT", {"default": 5, "min": 1, "max": 4096}),
                             "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
                             "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0})}}
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT", "INT")
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self, positive, negative, width, height, length, batch_size, strength):
        t, h, w = (length - 1) // 4 + 1, height // 8, width // 8
        g = torch.Generator().manual_seed(0)
        values = {"vace_frames": [torch.randn(1, 32, t, h, w, generator=g)],
                  "vace_mask": [torch.ones(1, 64, t, h, w)], "vace_strength": [strength]}
        positive = node_helpers.conditioning_set_values(positive, values, append=True)
        negative = node_helpers.conditioning_set_values(negative, values, append=True)
        return (positive, negative, {"samples": torch.zeros(batch_size, 16, t, h, w)}, 0)


NODE_CLASS_MAPPINGS = {n.__name__: n for n in (MagCacheTestConditioning, MagCacheTestDecode, MagCacheTestVaceToVideo)}
'''

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, comfyui: Path, checkpoints: dict, placeholders: dict[str, list[str]]):
        self.comfyui = comfyui
        self.base = Path(tempfile.mkdtemp(prefix="magcache-e2e-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base / "server.log"
        self.proc = None
        (self.base / "custom_nodes").mkdir()
        (self.base / "custom_nodes" / "magcache_pack").symlink_to(ROOT, target_is_directory=True)
        (self.base / "custom_nodes" / "magcache_test_nodes").mkdir()
        (self.base / "custom_nodes" / "magcache_test_nodes" / "__init__.py").write_text(TEST_NODES)
        for folder, names in placeholders.items():  # so the loaders list the examples' file names
            (self.base / "models" / folder).mkdir(parents=True, exist_ok=True)
            for name in names:
                (self.base / "models" / folder / name).touch()
        for name, write in checkpoints.items():
            path = self.base / "models" / "diffusion_models" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
        settings = self.base / "user" / "default" / "comfy.settings.json"  # a returning user: no template dialog
        settings.parent.mkdir(parents=True)
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
        (self.base / "input").mkdir(exist_ok=True)
        from PIL import Image

        Image.new("RGB", (64, 64), (120, 160, 200)).save(self.base / "input" / "example.png")

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        env = dict(os.environ)
        missing = [m for m in ("torchvision", "torchaudio")
                   if subprocess.run([sys.executable, "-c", f"import {m}"], capture_output=True).returncode]
        if missing:  # no wheel loads beside the CPU torch: the stand-ins (scripts/standins)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(STANDINS)]))
        cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--disable-auto-launch", "--use-pytorch-cross-attention"]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.comfyui, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                self.get("/object_info/KSampler")
                return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, data: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path} -> {e.code}: {e.read().decode(errors='replace')[:3000]}") from None

    def run_prompt(self, prompt: dict, timeout: float = 600.0) -> dict:
        prompt_id = self.post("/prompt", {"prompt": prompt, "client_id": "magcache-e2e"})["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                return history[prompt_id]
            if prompt_id in history and history[prompt_id].get("status", {}).get("status_str") == "error":
                return history[prompt_id]
            time.sleep(0.3)
        raise AssertionError(f"prompt did not finish in {timeout:.0f} s:\n{self.log()[-3000:]}")
