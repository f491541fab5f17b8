"""Write tools/plots_template.html: the page `dvc plots show` and `dvc plots diff` render
into, with Vega, Vega-Lite and Vega-Embed inline, so that its charts draw offline.

    python tools/vega_template.py                # `npm pack` of VERSIONS (the npm registry)
    python tools/vega_template.py --from DIR     # the three .min.js files, already at hand

DVC's own page loads the three libraries from a CDN (dvc_render's VegaRenderer.SCRIPTS):
offline it stays blank. .dvc/config names this page instead (`plots.html_template`, a path
relative to .dvc/). It keeps dvc-render's {plot_divs} and {refresh_tag} placeholders and
leaves out {scripts}, where the CDN's script tags would go. VERSIONS are those DVC's page
asks for (tests/test_dvc_workflow.py checks it): after a DVC upgrade that changes them,
run this again.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

VERSIONS = {"vega": "5.20.2", "vega-lite": "5.2.0", "vega-embed": "6.18.2"}
TEMPLATE = Path(__file__).with_name("plots_template.html")
SOURCE_MAP = re.compile(r"^//# sourceMappingURL=\S+$", re.M)
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- {versions}, inline (tools/vega_template.py): the charts draw offline -->
{scripts}
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def packed(folder: Path) -> dict[str, str]:
    """name -> build/NAME.min.js of each package, fetched with `npm pack` into ``folder``."""
    specs = [f"{name}@{version}" for name, version in VERSIONS.items()]
    subprocess.run(["npm", "pack", "--silent", *specs], cwd=folder, check=True,
                   stdout=subprocess.DEVNULL, timeout=600)
    scripts = {}
    for name, version in VERSIONS.items():
        with tarfile.open(folder / f"{name}-{version}.tgz") as tar:
            scripts[name] = tar.extractfile(f"package/build/{name}.min.js").read().decode()
    return scripts


def page(scripts: dict[str, str]) -> str:
    """The template, each script inline (less its pointer to a source map it lacks)."""
    inline = []
    for name, code in scripts.items():
        if "</script" in code.lower():  # would end the inline script early
            raise ValueError(f"{name}.min.js holds '</script': it cannot be inlined")
        inline.append(f"    <script>{SOURCE_MAP.sub('', code).rstrip()}</script>")
    return PAGE.format(versions=", ".join(f"{n} {v}" for n, v in VERSIONS.items()),
                       scripts="\n".join(inline))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path,
                        help="a folder holding vega.min.js, vega-lite.min.js, vega-embed.min.js")
    parser.add_argument("--out", type=Path, default=TEMPLATE)
    args = parser.parse_args(argv)
    if args.source:
        scripts = {name: (args.source / f"{name}.min.js").read_text(encoding="utf-8")
                   for name in VERSIONS}
    else:
        with tempfile.TemporaryDirectory() as folder:
            scripts = packed(Path(folder))
    args.out.write_text(page(scripts), encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
