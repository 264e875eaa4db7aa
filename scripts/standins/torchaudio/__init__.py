"""Stand-in torchaudio (see ../standin.py): importable, every use raises."""
import sys

from standin import install

install(sys.modules[__name__])
__version__ = "0.0.0+standin"
