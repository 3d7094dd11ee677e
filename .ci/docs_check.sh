#!/usr/bin/env bash
# CI: the type check and the API reference site, in the active venv where vgkern is installed
# (.ci/run calls this after the README test command). Installs the tools of pyproject.toml's
# `dev` extra (not the extra itself: that would build vgkern again), then
#   mypy                      python/vgkern, with [tool.mypy] from pyproject.toml
#   mkdocs build --strict     the site (mkdocs.yml), warnings as errors, into a temp folder
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d "${TMPDIR:-/tmp}/vgkern-docs.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# the `dev` extra's requirements, read from pyproject.toml (tomllib is Python 3.11+ only)
mapfile -t dev_requirements < <(python - <<'PY'
import re
text = open("pyproject.toml", encoding="utf-8").read()
extra = re.search(r'^dev = \[(.*?)\]$', text, re.M | re.S)  # the ] that ends a line
if extra is None:
    raise SystemExit("docs_check: no `dev = [...]` extra in pyproject.toml")
print("\n".join(re.findall(r'"([^"]+)"', extra.group(1))))
PY
)
echo "docs_check: installing ${dev_requirements[*]}"
python -m pip install --quiet "${dev_requirements[@]}"

echo "docs_check: mypy"
start=$SECONDS
python -m mypy --cache-dir "$work/mypy-cache"
echo "docs_check: mypy passed in $((SECONDS - start)) s"

echo "docs_check: mkdocs build --strict"
start=$SECONDS
NO_MKDOCS_2_WARNING=1 python -m mkdocs build --strict --site-dir "$work/site"
echo "docs_check: site built in $((SECONDS - start)) s"
