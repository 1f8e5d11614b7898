"""Pin the model the function may load: write the sha256 of an artifact's model.joblib into the code.

`make model` runs it after training into model_artifacts/; `scripts/package.py` uses `write_pin` on the
package it builds. Usage: python scripts/pin_model.py [ARTIFACT_DIR] (default model_artifacts/).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chalicelib.errors import ModelArtifactError
from chalicelib.scoring.artifact import MANIFEST_FILE, MODEL_FILE, sha256_of
from chalicelib.scoring.model_version import check_model_version

ROOT = Path(__file__).resolve().parent.parent
PIN_MODULE = Path("chalicelib") / "scoring" / "pinned_artifact.py"


def write_pin(code_root: Path, sha256: str) -> Path:
    """Set MODEL_SHA256 in the pin module under `code_root` (a checkout or a staged package); return its path."""
    path = code_root / PIN_MODULE
    lines = path.read_text().splitlines(keepends=True)
    if not any(line.startswith("MODEL_SHA256 = ") for line in lines):
        raise SystemExit(f"{path}: no MODEL_SHA256 line to pin")
    pinned = [f'MODEL_SHA256 = "{sha256}"\n' if line.startswith("MODEL_SHA256 = ") else line for line in lines]
    path.write_text("".join(pinned))
    return path


def checked_sha256(artifact: Path) -> str:
    """Return the sha256 of an artifact's model; refuse one whose manifest disagrees with it or with its version."""
    try:
        manifest = json.loads((artifact / MANIFEST_FILE).read_text())
        check_model_version(manifest, str(artifact))
        sha256 = sha256_of(artifact / MODEL_FILE)
    except (OSError, ValueError, ModelArtifactError) as exc:
        raise SystemExit(f"{artifact}: not pinned: {exc}") from exc
    if sha256 != manifest["model_sha256"]:
        raise SystemExit(f"{artifact}: not pinned: {MODEL_FILE} sha256 {sha256} is not the manifest's")
    return sha256


def main() -> None:
    artifact = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "model_artifacts"
    sha256 = checked_sha256(artifact)
    path = write_pin(ROOT, sha256)
    print(f"{path.relative_to(ROOT)}: pinned {artifact / MODEL_FILE} sha256 {sha256}")


if __name__ == "__main__":
    main()
