"""Model-agnostic MagCache core: settings, ratio tables, step schedule, skip rule, per-run state.

Python, torch and numpy (Pillow for the plot); nothing here imports ComfyUI, so all of it is tested
without ComfyUI (tests/unit)."""
from .calibration import Calibration, CalibrationResult, IncompleteCalibration
from .config import MagCacheConfig, MagCacheConfigError
from .presets import COND, UNCOND, Preset, PresetError, StepTables, builtin_presets, get_preset, interpolate
from .profiles import ProfileError, list_profiles, load_profile, save_profile
from .rule import Accumulator, RuleError, TableRule, decide_branch, eligible, predict_skips, replay, split_of
from .schedule import DegenerateSchedule, Schedule
from .state import BranchState, RunState

__all__ = [
    "Calibration", "CalibrationResult", "IncompleteCalibration", "ProfileError", "list_profiles", "load_profile",
    "save_profile",
    "MagCacheConfig", "MagCacheConfigError", "COND", "UNCOND", "Preset", "PresetError", "StepTables", "builtin_presets",
    "get_preset", "interpolate", "Accumulator", "RuleError", "TableRule", "decide_branch", "eligible", "predict_skips",
    "replay", "split_of", "DegenerateSchedule", "Schedule",
    "BranchState", "RunState",
]
