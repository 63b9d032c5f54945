"""tracking-validator: catch duplicate, reused and invalid parcel tracking numbers in real time."""

import os
from pathlib import Path

__version__ = "0.1.0"

# schemas/ sits beside the package in the repository (installs are editable, and the
# Docker image copies the whole tree); TRACKING_VALIDATOR_SCHEMAS overrides it.
SCHEMAS_DIR = Path(
    os.environ.get("TRACKING_VALIDATOR_SCHEMAS")
    or Path(__file__).resolve().parent.parent / "schemas"
)
