"""Stand-ins for torchvision / torchaudio where no wheel loads beside the CPU torch (see
scripts/comfyui.py). ComfyUI imports them at module level on paths MagCache never runs (SAM3, audio,
Cosmos, Cascade, some comfy_extras nodes); any use raises, so nothing can silently compute wrong."""
import importlib.abc
import importlib.machinery
import sys
import types


class _MissingType(type):
    def __getattr__(cls, name):  # InterpolationMode.BILINEAR, transforms.Compose...
        if name.startswith("__"):
            raise AttributeError(name)
        return cls


class Missing(metaclass=_MissingType):
    """Any attribute, subclass or annotation of a stand-in name works; creating or calling one raises."""

    def __init__(self, *args, **kwargs):
        raise ImportError(f"{type(self).__module__}.{type(self).__qualname__} is a stand-in: "
                          "the real package is not installed")

    def __class_getitem__(cls, item):
        return cls


def standin(module: types.ModuleType, name: str):
    return type(name, (Missing,), {"__module__": module.__name__, "__qualname__": name})


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, root: str):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(self.root + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        install(module)


def install(module: types.ModuleType) -> None:
    """Make `module` (and any submodule of it) a stand-in package."""
    module.__path__ = []
    module.__getattr__ = lambda name: _attr(module, name)
    root = module.__name__.split(".")[0]
    if not any(isinstance(f, _Finder) and f.root == root for f in sys.meta_path):
        sys.meta_path.append(_Finder(root))


def _attr(module, name):
    if name.startswith("__"):
        raise AttributeError(name)
    value = standin(module, name)
    setattr(module, name, value)
    return value
