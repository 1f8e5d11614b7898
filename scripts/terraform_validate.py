"""`terraform validate` of a built package's Terraform, offline when a provider mirror is at hand.

Validates a copy of DIR's *.tf.json (the package directory, where `terraform apply` runs, is left
untouched: no .terraform/ or lock file appears there). Providers come from a filesystem mirror when
TF_PLUGIN_MIRROR (default /opt/tf-plugins) exists, else from the registry. Without a terraform binary it
says so and exits 0: checkov and tests/infra/test_infrastructure.py still check the files.

    python scripts/terraform_validate.py build/package
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", type=Path, nargs="?", default=ROOT / "build" / "package")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "terraform-validate")
    args = parser.parse_args()
    terraform = shutil.which("terraform")
    if terraform is None:
        print("terraform is not installed: skipping `terraform validate` (checkov and the unit tests still run)")
        return
    package = args.package.resolve()
    if not (package / "chalice.tf.json").exists():
        raise SystemExit(f"{package}: no chalice.tf.json; run `make package`")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob("*.tf.json"):
        stale.unlink()
    for source in package.glob("*.tf.json"):
        shutil.copy2(source, work / source.name)
    # validate renders the state machines' templatefile(), so their definitions come along.
    definitions = work / "statemachines"
    if definitions.exists():
        shutil.rmtree(definitions)
    if (package / "statemachines").is_dir():
        shutil.copytree(package / "statemachines", definitions)
    # validate evaluates file functions (the upload's hash), so the zip must be where the config says.
    link = work / "deployment.zip"
    link.unlink(missing_ok=True)
    link.symlink_to(package / "deployment.zip")

    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    mirror = Path(os.environ.get("TF_PLUGIN_MIRROR", "/opt/tf-plugins"))
    if mirror.is_dir():
        config = work / "terraform.rc"
        config.write_text(
            "provider_installation {\n  filesystem_mirror {\n"
            f'    path    = "{mirror}"\n    include = ["registry.terraform.io/*/*"]\n  }}\n}}\n'
        )
        env["TF_CLI_CONFIG_FILE"] = str(config)
    for command in (["init", "-backend=false", "-input=false", "-no-color"], ["validate", "-no-color"]):
        done = subprocess.run([terraform, f"-chdir={work}", *command], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stdout + done.stderr)
            raise SystemExit(f"terraform {command[0]} failed for {package}")
    version = subprocess.run([terraform, "version"], env=env, capture_output=True, text=True).stdout.splitlines()[0]
    source = mirror if mirror.is_dir() else "the registry"
    print(f"terraform validate: {package} is valid ({version}, providers from {source})")


if __name__ == "__main__":
    main()
