"""The web page of `uniretrieve serve` ships inside the package and stays self-contained and safe: every asset it
names is package data, nothing is fetched from another origin, and no data string is ever parsed as HTML."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest

STATIC = files("uniretrieve").joinpath("serve", "static")
SCRIPTS = sorted(f.name for f in STATIC.iterdir() if f.name.endswith(".js"))
PAGE_FILES = ("index.html", "style.css", *SCRIPTS)


def static_text(name: str) -> str:
    return STATIC.joinpath(name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", PAGE_FILES)
def test_page_files_are_package_resources(name: str) -> None:
    # importlib.resources reads them from wherever the package is installed (wheel, editable, zip); the wheel test
    # (tests/test_packaging.py) checks that every file under uniretrieve/ is in the wheel.
    assert len(static_text(name)) > 500


def test_every_asset_the_page_names_is_shipped_and_local() -> None:
    html = static_text("index.html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    static = [a for a in assets if a.startswith("/static/")]
    assert sorted(static) == ["/static/app.js", "/static/style.css"]
    assert '<script type="module" src="/static/app.js">' in html
    for asset in assets:
        assert asset.startswith(("/static/", "/", "data:")), f"index.html loads {asset} from elsewhere"
    for name in PAGE_FILES:
        text = static_text(name)
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), (
            f"{name} names another origin"
        )
        assert "@import" not in text


def test_every_module_the_page_imports_is_shipped_and_used() -> None:
    imported = {"app.js"}
    for name in SCRIPTS:
        for target in re.findall(r'^import .* from "\./([\w-]+\.js)";$', static_text(name), re.M):
            assert target in SCRIPTS, f"{name} imports {target}, which is not shipped"
            imported.add(target)
        assert not re.search(r"\bimport\s*\(|from \"(?!\./)", static_text(name)), (
            f"{name}: a non-local import"
        )
    assert imported == set(SCRIPTS), f"shipped but never imported: {set(SCRIPTS) - imported}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_never_parse_data_as_html(name: str) -> None:
    code = "\n".join(line for line in static_text(name).splitlines() if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in code, f"{name} uses {sink}"


def test_every_element_the_scripts_look_up_exists_once() -> None:
    js = "\n".join(static_text(name) for name in SCRIPTS)
    html = static_text("index.html")
    wanted = set(re.findall(r'\$\("([\w-]+)"\)', js))
    assert len(wanted) > 20
    for element_id in wanted:
        assert len(re.findall(rf'\bid="{element_id}"', html)) == 1, f"#{element_id} missing or repeated"


def test_every_form_field_has_a_label() -> None:
    html = static_text("index.html")
    labelled = set(re.findall(r'<label[^>]*\bfor="([\w-]+)"', html))
    fields = re.findall(r"<(?:input|select|textarea)\b[^>]*>", html)
    assert fields
    for field in fields:
        element_id = re.search(r'\bid="([\w-]+)"', field)
        assert element_id and element_id.group(1) in labelled, f"no <label for> for {field}"
