"""MagCache for ComfyUI: magnitude-aware caching of transformer blocks.

Inside ComfyUI this exports the V3 entry point. Outside it (unit tests, tools) the package still
imports, so magcache/ and model_patches/ can be used and tested without ComfyUI."""
try:
    import comfy_api.latest  # noqa: F401
except ImportError:
    pass
else:
    from .extension import comfy_entrypoint  # noqa: F401
