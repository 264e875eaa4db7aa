"""Model-agnostic MagCache core: settings, ratio tables, step schedule, skip rule, per-run state.

Python, torch and numpy (Pillow for the plot); nothing here imports ComfyUI, so all of it is tested
without ComfyUI (tests/unit)."""
from .calibration import Calibration, CalibrationResult
from .config import MagCacheConfig, MagCacheConfigError
from .presets import COND, UNCOND, Preset, PresetError, builtin_presets, get_preset, interpolate
from .profiles import ProfileError, list_profiles, load_profile, save_profile
from .rule import Accumulator, eligible, predict_skips
from .schedule import DegenerateSchedule, Schedule
from .state import BranchState, RunState

__all__ = [
    "Calibration", "CalibrationResult", "ProfileError", "list_profiles", "load_profile", "save_profile",
    "MagCacheConfig", "MagCacheConfigError", "COND", "UNCOND", "Preset", "PresetError", "builtin_presets",
    "get_preset", "interpolate", "Accumulator", "eligible", "predict_skips", "DegenerateSchedule", "Schedule",
    "BranchState", "RunState",
]
