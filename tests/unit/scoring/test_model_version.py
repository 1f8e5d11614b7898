"""model_version names the whole decision: model bytes and every manifest field that sets a tier, value tier or reason.

A manifest edited after training no longer hashes to its version and is refused at load; the training
distribution the run report's drift reads is in the committed manifest, well formed.
"""

from __future__ import annotations

import copy
import itertools
import json
import shutil
from datetime import UTC, datetime

import pytest

from chalicelib.errors import ModelArtifactError
from chalicelib.scoring.artifact import MANIFEST_FILE, ModelCache, load_model
from chalicelib.scoring.model_version import (
    DECISION_FIELDS,
    ModelVersionMismatchError,
    check_model_version,
    decision_sha256,
    model_version,
)
from chalicelib.scoring.pinned_artifact import MODEL_SHA256
from chalicelib.scoring.scorer import Scorer
from chalicelib.scoring.state import build_state
from tests.conftest import ROOT, load_script, make_events

ARTIFACT = ROOT / "model_artifacts"
MANIFEST = json.loads((ARTIFACT / MANIFEST_FILE).read_text())


def _reversioned(manifest: dict) -> dict:
    """Return the manifest with its version recomputed, as training writes it."""
    manifest = copy.deepcopy(manifest)
    manifest["decision_sha256"] = decision_sha256(manifest)
    manifest["model_version"] = model_version(manifest)
    return manifest


def _artifact_with(tmp_path, manifest: dict, text: str | None = None):
    """Return a copy of the committed artifact whose manifest is `manifest` (or the raw `text`)."""
    directory = tmp_path / "artifact"
    shutil.copytree(ARTIFACT, directory)
    (directory / MANIFEST_FILE).write_text(text if text is not None else json.dumps(manifest, indent=2))
    return directory


def _edit(manifest: dict, path: str, value) -> dict:
    """Return a copy of `manifest` with the field at dotted `path` (list indexes as numbers) set to `value`."""
    edited = copy.deepcopy(manifest)
    *parents, last = path.split(".")
    node = edited
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value
    return edited


def test_the_committed_manifest_has_a_well_formed_training_distribution():
    dist = MANIFEST["training_distribution"]
    # THEN it covers the score and exactly the model's features, each in the shared format
    assert list(dist["features"]) == MANIFEST["feature_names"]
    assert dist["rows"] == MANIFEST["validation"]["users"]
    for name, column in {"score": dist["score"], **dist["features"]}.items():
        edges, proportions = column["edges"], column["proportions"]
        assert len(proportions) == len(edges) + 1, name
        assert all(b > a for a, b in itertools.pairwise(edges)), name
        assert abs(sum(proportions) - 1.0) < 1e-9, name
        assert min(proportions) > 0, name  # no bin the training rows left empty
    assert len(dist["score"]["edges"]) == 9 and 0 < dist["score"]["edges"][0] < dist["score"]["edges"][-1] < 1
    # AND the rare flag keeps a bin of its own, and the manifest stays small for every cold start
    assert dist["features"]["unsubscribed"]["edges"] == [1.0]
    assert len((ARTIFACT / MANIFEST_FILE).read_bytes()) < 40_000


def test_the_committed_version_is_what_its_decision_fields_hash_to():
    check_model_version(MANIFEST, "model_artifacts")
    assert MANIFEST["model_version"] == model_version(MANIFEST)
    assert (
        MANIFEST["model_version"]
        == f"churn-{MANIFEST['training_data']['cutoff'][:10].replace('-', '')}-" + (MANIFEST["decision_sha256"][:8])
    )


def test_two_artifacts_that_differ_only_in_their_risk_thresholds_have_different_versions():
    # GIVEN the same model bytes under two sets of risk thresholds
    other = _reversioned(_edit(MANIFEST, "risk_thresholds.high", 0.5))
    # THEN each names its own decision
    assert other["model_sha256"] == MANIFEST["model_sha256"]
    assert other["model_version"] != MANIFEST["model_version"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("risk_thresholds.medium", 0.2),
        ("tier_policy.save_rate", 0.3),
        ("value_thresholds.high", 500.0),
        ("segments.rfm_edges.money.1", 60.0),
        ("segments.activity.labels", ["low", "medium", "high"]),
        ("reference_features.recency_days", 99.0),
        ("training_data.horizon_days", 60.0),
        ("training_data.cutoff", "2026-09-02T00:00:00Z"),
        ("model_sha256", "ab" * 32),
        ("state_layout", "other-layout"),
    ],
)
def test_every_field_that_changes_a_tier_or_reason_changes_the_version(path, value):
    assert _reversioned(_edit(MANIFEST, path, value))["model_version"] != MANIFEST["model_version"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("created_at", "2030-01-01T00:00:00Z"),
        ("metrics.auc", 0.5),
        ("feature_importance", {}),
        ("training_distribution.rows", 1),
        ("selection", "another sentence"),
    ],
)
def test_fields_that_only_describe_the_model_leave_its_version_alone(path, value):
    assert _reversioned(_edit(MANIFEST, path, value))["model_version"] == MANIFEST["model_version"]


def test_the_version_hashes_values_not_text():
    # GIVEN the manifest re-serialised with keys in reverse order and no indentation, a number written as an int
    shuffled = json.loads(json.dumps(dict(reversed(list(MANIFEST.items())))))
    shuffled["tier_policy"]["cost_high"] = int(MANIFEST["tier_policy"]["cost_high"])
    # THEN its version is the same: the decision did not change
    assert model_version(shuffled) == MANIFEST["model_version"]
    check_model_version(shuffled, "shuffled")


def test_a_threshold_edited_by_hand_is_refused_at_load_even_though_the_model_bytes_are_the_pinned_ones(
    tmp_path, monkeypatch
):
    # GIVEN the committed artifact with its high-risk threshold lowered by hand after training
    directory = _artifact_with(tmp_path, _edit(MANIFEST, "risk_thresholds.high", 0.5))
    # WHEN it is loaded directly, or by the function's cache that holds it to the pin
    # THEN it is refused, naming the version it claims and the one its fields hash to
    with pytest.raises(ModelVersionMismatchError, match="edited after training") as refused:
        load_model(directory)
    assert MANIFEST["model_version"] in str(refused.value)
    monkeypatch.setenv("MODEL_DIR", str(directory))
    with pytest.raises(ModelVersionMismatchError, match="refusing to load"):
        ModelCache(pinned=MODEL_SHA256).get()


def test_a_hand_edit_with_only_one_of_the_version_and_the_decision_hash_redone_is_refused(tmp_path):
    edited = _reversioned(_edit(MANIFEST, "value_thresholds.medium", 1.0))
    # GIVEN the new decision hash beside the old version string, and the old hash beside the new version string
    for manifest in (
        {**edited, "model_version": MANIFEST["model_version"]},
        {**edited, "decision_sha256": MANIFEST["decision_sha256"]},
    ):
        # THEN neither loads
        with pytest.raises(ModelVersionMismatchError):
            check_model_version(manifest, "edited")


def test_a_manifest_from_before_the_version_covered_thresholds_is_refused(tmp_path):
    # GIVEN a manifest as training wrote it before: no decision hash, a version of the model bytes alone
    old = {k: v for k, v in MANIFEST.items() if k != "decision_sha256"}
    old["model_version"] = f"churn-20261201-{MANIFEST['model_sha256'][:8]}"
    # THEN it is refused, saying why and what to do
    with pytest.raises(ModelVersionMismatchError, match=r"no decision_sha256 .* retrain"):
        load_model(_artifact_with(tmp_path, old))


def test_a_threshold_edited_to_nan_is_refused_as_a_bad_artifact(tmp_path):
    text = json.dumps(MANIFEST, indent=2).replace(
        f'"high": {json.dumps(MANIFEST["risk_thresholds"]["high"])}', '"high": NaN', 1
    )
    assert "NaN" in text
    with pytest.raises(ModelArtifactError, match="not a finite number"):
        load_model(_artifact_with(tmp_path, MANIFEST, text))


@pytest.mark.parametrize("field", [*DECISION_FIELDS, "training_data"])
def test_a_manifest_without_a_decision_field_is_refused(field):
    manifest = {k: v for k, v in MANIFEST.items() if k != field}
    with pytest.raises(ModelArtifactError, match="manifest lacks"):
        check_model_version(manifest, "incomplete")


def test_a_manifest_re_versioned_after_a_deliberate_threshold_change_scores_under_its_new_version(tmp_path):
    # GIVEN new thresholds written with the version recomputed, as `train --tier-mode fixed` would write them
    changed = _reversioned(_edit(MANIFEST, "risk_thresholds", {"high": 0.9, "medium": 0.5}))
    model = load_model(_artifact_with(tmp_path, changed))
    # WHEN users are scored THEN every score carries the version of the decision that tiered it
    as_of = datetime(2026, 6, 1, tzinfo=UTC)
    scores = Scorer(model).score(build_state(make_events(30, 600, 5, as_of)), as_of.timestamp())
    assert scores.model_version == changed["model_version"] != MANIFEST["model_version"]


def test_pin_model_refuses_to_pin_an_artifact_whose_thresholds_were_edited(tmp_path):
    checked_sha256 = load_script("pin_model").checked_sha256
    # GIVEN the committed artifact, and a copy with its medium threshold edited by hand
    assert checked_sha256(ARTIFACT) == MODEL_SHA256
    edited = _artifact_with(tmp_path, _edit(MANIFEST, "risk_thresholds.medium", 0.1))
    # WHEN it is pinned THEN the pin is refused, saying why
    with pytest.raises(SystemExit, match=r"not pinned: .*edited after training"):
        checked_sha256(edited)


@pytest.mark.parametrize("text", ["[]", '"churn"', "null"])
def test_a_manifest_that_is_not_a_json_object_is_refused_as_a_bad_artifact(tmp_path, text):
    with pytest.raises(ModelArtifactError, match="not a JSON object"):
        load_model(_artifact_with(tmp_path, MANIFEST, text))


@pytest.mark.parametrize("training_data", [None, [], "2026-10-02"])
def test_a_manifest_whose_training_data_is_not_an_object_is_refused_as_a_bad_artifact(training_data):
    with pytest.raises(ModelArtifactError, match=r"manifest lacks training_data\.cutoff"):
        check_model_version({**MANIFEST, "training_data": training_data}, "broken")


def test_the_deployment_build_refuses_a_staged_artifact_whose_thresholds_were_edited(tmp_path):
    # GIVEN the committed artifact staged with its high threshold edited, model bytes still the pinned ones
    edited = _artifact_with(tmp_path, _edit(MANIFEST, "risk_thresholds.high", 0.95))
    # WHEN the build checks it as the function will load it THEN it stops, and the committed one passes
    with pytest.raises(ModelVersionMismatchError, match="edited after training"):
        load_script("package").check_artifact(edited)
    assert load_script("package").check_artifact(ARTIFACT) == MANIFEST["model_version"]
