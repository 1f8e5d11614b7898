"""What `model_version` names: the whole decision, model bytes and every manifest field that sets a tier or reason.

A score carries its model's version so that a consumer can tell which decision made it. Two artifacts that
share model bytes but not risk thresholds tier the same user differently, so the version is a hash over the
model's sha256 and every manifest field that changes a score's probability meaning, risk tier, value tier,
reasons or segment. Descriptive fields (metrics, candidates, the training distribution, creation time) are
not in it: editing them changes no score. The version is recomputed at load, so a manifest edited by hand
after training is refused instead of scoring under a version that no longer names what it does.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from chalicelib.errors import ModelArtifactError

# Top-level manifest fields in the version, each because the scoring path reads it.
DECISION_FIELDS = (
    "model_sha256",  # the fitted pipeline: the probability itself
    "feature_names",  # the columns the model reads, in order
    "state_layout",  # how behaviour state becomes those columns
    "risk_thresholds",  # probability -> risk tier
    "tier_policy",  # how those thresholds were chosen (the same thresholds from another policy are another decision)
    "value_thresholds",  # net spend or activity -> value tier
    "segments",  # RFM edges and activity clusters of every score
    "reference_features",  # the typical user that reasons are measured against
)
# Fields of manifest["training_data"] in the version: what the probability means (no event within the
# horizon, from behaviour up to the cutoff); the cutoff also dates the version.
DECISION_TRAINING_FIELDS = ("cutoff", "horizon_days")
# Significant digits of every number the version hashes.
HASHED_DIGITS = 10


class ModelVersionMismatchError(ModelArtifactError):
    """A manifest whose decision fields no longer hash to its model_version: edited after training."""


def decision_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """Return the part of a manifest that the version covers; raise ModelArtifactError when a field is missing."""
    training = manifest.get("training_data")
    training = training if isinstance(training, dict) else {}
    missing = [f for f in DECISION_FIELDS if f not in manifest]
    missing += [f"training_data.{f}" for f in DECISION_TRAINING_FIELDS if f not in training]
    if missing:
        raise ModelArtifactError(f"manifest lacks {', '.join(missing)}: not a complete model artifact; retrain")
    covered = {f: manifest[f] for f in DECISION_FIELDS}
    covered["training_data"] = {f: training[f] for f in DECISION_TRAINING_FIELDS}
    return covered


def decision_sha256(manifest: dict[str, Any]) -> str:
    """Return the hex sha256 of the manifest's decision fields, in canonical JSON (sorted keys, no spaces).

    Values are hashed, not text: re-indenting the manifest or writing 0.63 as 0.6300 changes nothing.
    """
    canonical = json.dumps(_canonical(decision_fields(manifest)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    """Return a JSON-like value with every number as a float of HASHED_DIGITS significant digits.

    k-means centres differ in their last bit with the number of OpenMP threads that fitted them; rounding
    keeps that noise out of the version, and a decision that differs past the 10th digit is the same decision.
    """
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if not math.isfinite(value):  # json.loads lets NaN and Infinity into a hand-edited manifest
        raise ModelArtifactError(f"manifest decision fields hold {value}, not a finite number")
    return float(f"{value:.{HASHED_DIGITS}g}")


def model_version(manifest: dict[str, Any]) -> str:
    """Return `churn-<training cutoff YYYYMMDD>-<first 8 hex of the decision sha256>` for a manifest."""
    cutoff = str(manifest.get("training_data", {}).get("cutoff", ""))
    day = cutoff[:10].replace("-", "")
    if len(day) != 8 or not day.isdigit():
        raise ModelArtifactError(f"manifest training_data.cutoff {cutoff!r} is not an ISO 8601 date")
    return f"churn-{day}-{decision_sha256(manifest)[:8]}"


def check_model_version(manifest: dict[str, Any], where: str) -> None:
    """Raise ModelVersionMismatchError unless the manifest's model_version and decision_sha256 are its own.

    A manifest from before the version covered the thresholds has no decision_sha256; it is refused too,
    because nothing in it could tell a hand-edited threshold from a trained one.
    """
    if not isinstance(manifest, dict):
        raise ModelArtifactError(f"{where}: the manifest is not a JSON object")
    if "decision_sha256" not in manifest:
        raise ModelVersionMismatchError(
            f"{where}: manifest has no decision_sha256 (made before model_version covered the thresholds); "
            "its thresholds cannot be verified: retrain it (make model, or train --out DIR)"
        )
    digest = decision_sha256(manifest)
    expected = model_version(manifest)
    if manifest["decision_sha256"] != digest or manifest.get("model_version") != expected:
        raise ModelVersionMismatchError(
            f"{where}: manifest model_version {manifest.get('model_version')!r} does not match its decision fields "
            f"(they hash to {expected!r}): {', '.join(DECISION_FIELDS)} or training_data "
            f"{'/'.join(DECISION_TRAINING_FIELDS)} were edited after training; refusing to load. "
            "To change thresholds, train with them (train --tier-mode fixed --high-threshold P --medium-threshold P)"
        )
