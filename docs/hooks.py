"""mkdocs hook: the site must cover the package and the examples as they grow.

With `mkdocs build --strict` a warning fails the build, so a new public module of vgkern (a
module or package directly under python/vgkern/ whose name does not start with "_") without a
docs/api page holding `::: vgkern.<name>`, or a new examples/*.py script that docs/examples.md
does not include, stops CI with a message saying what to add."""
import glob
import logging
import os
import pkgutil

log = logging.getLogger("mkdocs.hooks.vgkern_coverage")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def on_config(config):
    docs = config["docs_dir"]
    api = "\n".join(_read(p) for p in glob.glob(os.path.join(docs, "api", "*.md")))
    package = os.path.join(ROOT, "python", "vgkern")
    for info in pkgutil.iter_modules([package]):
        if not info.name.startswith("_") and f"::: vgkern.{info.name}\n" not in api + "\n":
            log.warning(f"vgkern.{info.name} has no API page: add docs/api/{info.name}.md "
                        f"containing '::: vgkern.{info.name}' and a line for it in "
                        "mkdocs.yml's nav")
    examples = _read(os.path.join(docs, "examples.md"))
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "*.py"))):
        rel = os.path.relpath(path, ROOT)
        if f'--8<-- "{rel}"' not in examples:
            log.warning(f"{rel} is not on the examples page: add a section with "
                        f'--8<-- "{rel}" in a python code block to docs/examples.md')
    return config
