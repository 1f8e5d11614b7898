"""The sha256 of the one model.joblib the function may load, kept in the code rather than beside the model.

A hash in the artifact's own manifest only proves the two files agree: whoever can replace model.joblib can
rewrite the manifest too. This pin lives in the deployed code instead. `make model` (scripts/pin_model.py)
writes it after training into model_artifacts/, `scripts/package.py` writes it into the package after checking
that the staged artifact matches it, and a test checks that it matches the committed model_artifacts/.
"""

MODEL_SHA256 = "32f899d49232b19c627859c378591e641aef38a79fbec96f2957b6573eda52b9"
