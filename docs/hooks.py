"""mkdocs hooks for vgkern's site.

Coverage: the site must cover the package and the examples as they grow. With `mkdocs build
--strict` a warning fails the build, so a new public module of vgkern (a module or package
directly under python/vgkern/ whose name does not start with "_") without a docs/api page
holding `::: vgkern.<name>`, or a new examples/*.py script that docs/examples.md does not
include, stops CI with a message saying what to add.

Text made at import time: mkdocstrings reads the source, where two lists are not written out
because they come from a single declaration elsewhere: the report fields (the native schema,
_core.REPORT_DOCS) and the sweep grid keys (vgkern.sweeps.spec). `<!-- vgkern:report-fields -->`
in a page becomes the field tables, and the `{keys}` placeholder of vgkern.sweeps' docstring
the keys' table, both read from the imported vgkern."""
import glob
import html
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


def _field_rows(docs):
    return "\n".join(f"| `{name}` | {meaning.replace('|', '&#124;')} |"
                     for name, meaning in docs.items())


def on_page_markdown(markdown, page, config, files):
    marker = "<!-- vgkern:report-fields -->"
    if marker not in markdown:
        return markdown
    from vgkern import report

    header = "| field | meaning |\n| --- | --- |\n"
    tables = ("### GradReport\n\nFloat64 arrays of length L (one entry per layer), and the "
              "loss.\n\n" + header + _field_rows(report._MLP_FIELD_DOCS) +
              "\n\n### SequenceReport\n\nPer time step: float64 arrays of length T; per "
              "network: floats; and the loss.\n\n" + header +
              _field_rows(report._SEQUENCE_FIELD_DOCS) + "\n")
    return markdown.replace(marker, tables)


def on_page_content(content, page, config, files):
    placeholder = "<p>{keys}</p>"
    if placeholder not in content:
        return content
    from vgkern.sweeps import spec

    return content.replace(placeholder,
                           f"<pre><code>{html.escape(spec.describe_keys())}</code></pre>")
