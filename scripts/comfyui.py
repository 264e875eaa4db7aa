"""Real ComfyUI installs for the tests and the demo: one source tree and one virtual environment per
ComfyUI version, in a cache outside the repository. Standard library only.

    python scripts/comfyui.py test [pytest args]   # both test layers against every ComfyUI given
    python scripts/comfyui.py demo [demo args]     # the demo, against the newest ComfyUI given
    python scripts/comfyui.py env                  # prepare, then print "version<TAB>tree<TAB>python"

Which ComfyUI (first that applies):
  COMFYUI_PATH=/path/to/ComfyUI        one existing source tree
  MAGCACHE_COMFYUI_ARCHIVES=/folder    every ComfyUI-<version>.tar.gz there (checked against its
                                       SHA256SUMS), unpacked into the cache
  MAGCACHE_COMFYUI=none                no ComfyUI: the unit layer only, in this Python
  otherwise                            the pinned releases below, cloned into the cache (network)

Each version gets its own venv with its requirements installed the CPU way: torch pinned
(MAGCACHE_TORCH, default torch==2.13.0), ComfyUI's requirements under that constraint without the
wheels that would replace torch (torchvision, torchaudio, spandrel); stand-ins for torchvision and
torchaudio only where the real package does not import (scripts/standins). Cache: MAGCACHE_CACHE,
default ~/.cache/magcache-comfyui. A venv is rebuilt when its requirements or this recipe change."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STANDINS = Path(__file__).resolve().parent / "standins"
RECIPE = "4"  # bump when the install steps below change
# The versions the pack is tested on (README, "Tests"); cloned when no tree or archive is given.
PINNED = {"0.8.0": "618b803d314a525faca8f8163d85eaa9ebc1d774", "0.33.0": "783545f689a0af730065994b46b382ae24844c99"}
REPO_URL = "https://github.com/comfyanonymous/ComfyUI"
NOT_NEEDED = re.compile(r"^(torch|torchvision|torchaudio|spandrel)\s*([<>=~!;\[].*)?$", re.I)
TEST_PACKAGES = ["pytest", "pytest-timeout", "pillow", "numpy", "playwright"]
# raylight's process-level path (tests/integration/test_raylight.py; ../shared/RAYLIGHT.md): xfuser 0.4.5
# without its dependencies (newer xfuser calls get_device_name, which raylight's stand-in lacks); Ray for
# the smoke run of the node with CPU actors.
RAYLIGHT_PACKAGES, RAYLIGHT_NO_DEPS = ["yunchang==0.6.4", "cloudpickle", "ray==2.60.0"], ["xfuser==0.4.5"]
# What kijai's ComfyUI-FramePackWrapper needs beyond ComfyUI's requirements (its requirements.txt: diffusers,
# accelerate; transformers, einops, safetensors are ComfyUI's own), pinned by us, for the FramePack tests.
FRAMEPACK_PACKAGES = ["diffusers==0.42.1", "accelerate==1.15.0"]


def say(msg: str) -> None:
    print(f"[comfyui] {msg}", flush=True)


def cache_dir() -> Path:
    base = os.environ.get("MAGCACHE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "magcache-comfyui")
    return Path(base)


def version_of(tree: Path) -> str:
    text = (tree / "comfyui_version.py").read_text(encoding="utf-8") if (tree / "comfyui_version.py").is_file() else ""
    m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
    return m.group(1) if m else tree.name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def from_archives(folder: Path) -> list[Path]:
    archives = sorted(folder.glob("ComfyUI-*.tar.gz"), key=lambda p: [int(x) if x.isdigit() else x
                                                                      for x in re.split(r"[.-]", p.name)])
    if not archives:
        sys.exit(f"no ComfyUI-<version>.tar.gz in {folder}")
    sums = {}
    if (folder / "SHA256SUMS").is_file():
        for line in (folder / "SHA256SUMS").read_text().splitlines():
            if line.strip():
                digest, name = line.split(maxsplit=1)
                sums[name.lstrip("*")] = digest
    trees = []
    for archive in archives:
        digest = _sha256(archive)
        if archive.name in sums and sums[archive.name] != digest:
            sys.exit(f"{archive} does not match its SHA256SUMS entry")
        top = archive.name[: -len(".tar.gz")]
        dest = cache_dir() / "src" / f"{top}-{digest[:12]}"
        if not (dest / top / "comfy" / "model_patcher.py").is_file():
            say(f"unpacking {archive.name} into {dest}")
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter="data")
        trees.append(dest / top)
    return trees


def from_git() -> list[Path]:
    trees = []
    for version, commit in PINNED.items():
        dest = cache_dir() / "src" / f"ComfyUI-{version}-git"
        if not (dest / "comfy" / "model_patcher.py").is_file():
            say(f"cloning ComfyUI {version} ({commit[:8]}) into {dest}")
            shutil.rmtree(dest, ignore_errors=True)
            subprocess.run(["git", "clone", "--quiet", "--filter=blob:none", "--no-checkout", REPO_URL, str(dest)],
                           check=True)
            subprocess.run(["git", "-C", str(dest), "checkout", "--quiet", commit], check=True)
        trees.append(dest)
    return trees


def trees() -> list[Path]:
    if os.environ.get("COMFYUI_PATH"):
        tree = Path(os.environ["COMFYUI_PATH"]).resolve()
        if not (tree / "comfy" / "model_patcher.py").is_file():
            sys.exit(f"COMFYUI_PATH={tree} is not a ComfyUI source tree (no comfy/model_patcher.py)")
        return [tree]
    if os.environ.get("MAGCACHE_COMFYUI_ARCHIVES"):
        return from_archives(Path(os.environ["MAGCACHE_COMFYUI_ARCHIVES"]).resolve())
    return from_git()


def raylight_src() -> Path | None:
    """raylight's source folder (the one holding the `raylight` package): MAGCACHE_RAYLIGHT_SRC, or the
    raylight-*.tar.gz in MAGCACHE_RAYLIGHT_ARCHIVES unpacked into the cache; None without either."""
    if os.environ.get("MAGCACHE_RAYLIGHT_SRC"):
        return Path(os.environ["MAGCACHE_RAYLIGHT_SRC"]).resolve()
    folder = os.environ.get("MAGCACHE_RAYLIGHT_ARCHIVES")
    archives = sorted(Path(folder).glob("raylight-*.tar.gz")) if folder else []
    if not archives:
        if folder:
            sys.exit(f"no raylight-*.tar.gz in {folder}")
        return None
    archive = archives[-1]
    top = archive.name[: -len(".tar.gz")]
    dest = cache_dir() / "src" / f"{top}-{_sha256(archive)[:12]}"
    found = sorted(dest.glob("*/src/raylight/__init__.py"))
    if not found:
        say(f"unpacking {archive.name} into {dest}")
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
        found = sorted(dest.glob("*/src/raylight/__init__.py"))
        if not found:
            sys.exit(f"{archive} holds no src/raylight package")
    return found[0].parents[1]


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True)


def venv_python(tree: Path) -> Path:
    """The venv for this tree, built (or rebuilt) as needed."""
    torch_spec = os.environ.get("MAGCACHE_TORCH", "torch==2.13.0")
    reqs = [ln.strip() for ln in (tree / "requirements.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#") and not NOT_NEEDED.match(ln.strip())]
    reqs += ["requests"] + TEST_PACKAGES + FRAMEPACK_PACKAGES  # requests: imported by the server, missing in 0.8.0's list
    standins = sorted((p.relative_to(STANDINS).as_posix(), p.read_bytes()) for p in STANDINS.rglob("*.py"))
    key = hashlib.sha256(repr((RECIPE, sys.version, torch_spec, reqs, standins, RAYLIGHT_PACKAGES,
                               RAYLIGHT_NO_DEPS)).encode()).hexdigest()[:12]
    env_dir = cache_dir() / "venv" / f"{tree.name}-{key}"
    python = env_dir / "bin" / "python"
    if (env_dir / ".ready").is_file():
        return python
    say(f"creating {env_dir} (ComfyUI {version_of(tree)}, {torch_spec})")
    t0 = time.monotonic()
    shutil.rmtree(env_dir, ignore_errors=True)
    venv.EnvBuilder(with_pip=True).create(env_dir)
    _pip(python, torch_spec)
    torch_version = subprocess.run([str(python), "-c", "import torch; print(torch.__version__.split('+')[0])"],
                                   check=True, capture_output=True, text=True).stdout.strip()
    constraint = env_dir / "constraint.txt"
    constraint.write_text(f"torch=={torch_version}\n")
    req_file = env_dir / "requirements.txt"
    req_file.write_text("\n".join(reqs) + "\n")
    _pip(python, "-r", str(req_file), "-c", str(constraint))
    _pip(python, *RAYLIGHT_PACKAGES, "-c", str(constraint))
    _pip(python, "--no-deps", *RAYLIGHT_NO_DEPS)
    missing = [m for m in ("torchvision", "torchaudio")
               if subprocess.run([str(python), "-c", f"import {m}"], capture_output=True).returncode]
    if missing:  # no wheel loads beside this torch: stand-ins (copied, so the venv outlives this checkout)
        dest = env_dir / "standins"
        shutil.copytree(STANDINS, dest, ignore=shutil.ignore_patterns("__pycache__"))
        for m in set(("torchvision", "torchaudio")) - set(missing):
            shutil.rmtree(dest / m)
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        Path(site, "magcache_standins.pth").write_text(str(dest) + "\n")  # appended: a real package wins
        say(f"stand-ins for {', '.join(missing)} (no wheel loads beside torch {torch_version})")
    (env_dir / ".ready").write_text(f"{time.monotonic() - t0:.0f} s\n")
    say(f"ready in {time.monotonic() - t0:.0f} s")
    return python


def framepack_wrapper() -> str | None:
    """kijai's ComfyUI-FramePackWrapper for the FramePack tests: the ComfyUI-FramePackWrapper-*.tar.gz in
    MAGCACHE_FRAMEPACK_ARCHIVES (checked against its SHA256SUMS), unpacked into the cache; its folder, or None
    when no archive folder is given (the tests then skip, unless MAGCACHE_REQUIRE_FRAMEPACK=1)."""
    folder = os.environ.get("MAGCACHE_FRAMEPACK_ARCHIVES")
    if not folder:
        return os.environ.get("MAGCACHE_FRAMEPACK")
    archives = sorted(Path(folder).resolve().glob("ComfyUI-FramePackWrapper-*.tar.gz"))
    if not archives:
        sys.exit(f"no ComfyUI-FramePackWrapper-*.tar.gz in {folder}")
    archive = archives[-1]
    sums = Path(folder, "SHA256SUMS")
    digest = _sha256(archive)
    if sums.is_file() and any(line.split()[1:] == [archive.name] and line.split()[0] != digest
                              for line in sums.read_text().splitlines() if line.strip()):
        sys.exit(f"{archive} does not match its SHA256SUMS entry")
    top = archive.name[: -len(".tar.gz")]
    dest = cache_dir() / "src" / f"{top}-{digest[:12]}"
    if not (dest / top / "nodes.py").is_file():
        say(f"unpacking {archive.name} into {dest}")
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    return str(dest / top)


SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def test_paths(pytest_args: list[str]) -> list[str]:
    """`tests` unless the arguments name test paths themselves: pytest given both collects all of
    `tests` (a named file inside it is only de-duplicated), so `test tests/unit/test_x.py` ran everything."""
    named = [a for a in pytest_args if not a.startswith("-") and (ROOT / a.split("::")[0]).exists()]
    return [] if named else ["tests"]


def run_tests(pytest_args: list[str]) -> int:
    if os.environ.get("MAGCACHE_COMFYUI") == "none":
        return subprocess.run([sys.executable, "-m", "pytest", *test_paths(pytest_args), *pytest_args], cwd=ROOT).returncode
    rows, failed_any = [], False
    raylight = raylight_src()
    wrapper = framepack_wrapper()
    for tree in trees():
        python = venv_python(tree)
        version = version_of(tree)
        say(f"ComfyUI {version} at {tree}")
        env = dict(os.environ, COMFYUI_PATH=str(tree), MAGCACHE_REQUIRE_COMFYUI="1", PYTHONUNBUFFERED="1")
        if raylight is not None:
            env["MAGCACHE_RAYLIGHT_SRC"] = str(raylight)
        if wrapper:
            env["MAGCACHE_FRAMEPACK"] = wrapper
        t0 = time.monotonic()
        proc = subprocess.Popen([str(python), "-m", "pytest", *test_paths(pytest_args), "-q", "-rs", "--timeout=1800",
                                 *pytest_args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        last = ""
        for line in proc.stdout:
            sys.stdout.write(line)
            if SUMMARY.search(line) and " in " in line:
                last = line
        code = proc.wait()
        counts = {k if not k.startswith("error") else "errors": 0 for k in ("passed", "failed", "skipped", "errors")}
        for n, kind in SUMMARY.findall(last):
            counts["errors" if kind.startswith("error") else kind] = counts.get(kind, 0) + int(n)
        failed_any |= code != 0
        rows.append((version, counts, time.monotonic() - t0, code))
    print("\nMagCache test suite per ComfyUI version:")
    for version, c, secs, code in rows:
        print(f"  ComfyUI {version}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped, "
              f"{c['errors']} errors in {secs:.0f} s (exit {code})")
    total = {k: sum(r[1][k] for r in rows) for k in ("passed", "failed", "skipped", "errors")}
    print(f"total: {total['passed']} passed, {total['failed'] + total['errors']} failed, {total['skipped']} skipped")
    return 1 if failed_any else 0


def main(argv: list[str]) -> int:
    cmd, rest = (argv[0], argv[1:]) if argv else ("test", [])
    if cmd == "test":
        return run_tests(rest)
    if cmd == "env":
        for tree in trees():
            print(f"{version_of(tree)}\t{tree}\t{venv_python(tree)}")
        return 0
    if cmd == "demo":
        tree = trees()[-1]  # the newest ComfyUI given
        python = venv_python(tree)
        env = dict(os.environ, COMFYUI_PATH=str(tree))
        return subprocess.run([str(python), str(ROOT / "scripts" / "demo.py"), *rest], env=env).returncode
    sys.exit(f"usage: python scripts/comfyui.py test|demo|env [args]  (got {cmd!r})")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
