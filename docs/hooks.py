"""MkDocs hook: serve the benchmark plots without copying them into docs/.

Results pages link ``../../benchmarks/results/NAME.png`` (the path that works
when the markdown is read in the repository); the site serves the same files
as ``results/plots/NAME.png``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
REPO_LINK = "](../../benchmarks/results/"
SITE_LINK = "](plots/"


def on_files(files, config):
    for png in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"results/plots/{png.name}", abs_src_path=str(png)))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri.startswith("results/"):
        return markdown.replace(REPO_LINK, SITE_LINK)
    return markdown
