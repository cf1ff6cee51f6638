"""Package discovery for the four source roots (the rest of the metadata is in pyproject.toml).

train/, index/ and tiny/ live at the repository root but install as `uniretrieve.train`, `uniretrieve.index` and
`uniretrieve.tiny`, so no generic top-level `train`, `index` or `tiny` module is ever put on sys.path. Every package
below a root is found, and every data file below it (weights, YAML presets, web assets) ships with its nearest
package, so neither a new subpackage nor a new data folder can be left out of the wheel (tests/test_packaging.py
builds, installs and runs it).
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOTS = {
    "uniretrieve": "uniretrieve",
    "uniretrieve.train": "train",
    "uniretrieve.index": "index",
    "uniretrieve.tiny": "tiny",
}
SKIP = {"__pycache__"}

packages: list[str] = []
package_dir: dict[str, str] = {}
package_data: dict[str, list[str]] = {}
for name, folder in ROOTS.items():
    package_dir[name] = folder
    subs = [name] + [f"{name}.{sub}" for sub in find_packages(folder)]
    packages += subs
    dirs = {sub: Path(folder, *sub.split(".")[len(name.split(".")) :]) for sub in subs}
    for sub, d in dirs.items():
        for f in d.rglob("*"):
            if not f.is_file() or f.suffix in (".py", ".pyc") or SKIP & set(f.parts):
                continue
            # the nearest package holding the file owns it
            owner = max((s for s, p in dirs.items() if p in f.parents), key=lambda s: len(dirs[s].parts))
            if owner == sub:
                package_data.setdefault(sub, []).append(str(f.relative_to(d)))

setup(packages=packages, package_dir=package_dir, package_data=package_data)
