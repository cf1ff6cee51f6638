"""Image memory is bounded: an image over the pixel cap is refused from its header (encode skips and records it),
and large images under the cap are decoded at a reduced scale. Peak memory is measured in a subprocess."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import make_image
from uniretrieve.cli.app import app
from uniretrieve.models.images import (
    KEEP_PIXELS,
    MAX_PIXELS_ENV,
    ImageLoadError,
    load_image,
    load_image_bytes,
)


def bomb_png(path: Path, width: int = 12000, height: int = 12000, rows: int | None = None) -> Path:
    """An all-black RGB PNG of width×height, streamed so that neither writing nor the file is large (`rows`: write
    only that many rows, for a file that is refused from its header anyway)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * (3 * width)
    idat = b"".join(z.compress(row) for _ in range(height if rows is None else rows)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_an_image_over_the_cap_is_refused_with_its_size(tmp_path: Path) -> None:
    png = bomb_png(tmp_path / "bomb.png")
    assert png.stat().st_size < 1 << 20
    with pytest.raises(ImageLoadError) as info:
        load_image(png)
    assert info.value.path == str(png)
    assert "12000×12000" in info.value.reason and "pixel cap" in info.value.reason
    with pytest.raises(ImageLoadError, match="pixel cap"):
        load_image_bytes(png.read_bytes(), "test.parquet row 3")
    with pytest.raises(ImageLoadError, match="pixel cap"):
        load_image(make_image(0, (100, 100)), limit=5000)


def test_an_image_over_pils_own_limit_is_refused_the_same_way(tmp_path: Path) -> None:
    header_only = bomb_png(tmp_path / "huge.png", 30000, 30000, rows=0)  # refused before any row is read
    with pytest.raises(ImageLoadError, match="pixel cap"):
        load_image(header_only)


def test_the_cap_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    png = bomb_png(tmp_path / "wide.png", 3000, 2000)
    assert load_image(png).size == (3000, 2000)  # under the cap and small enough: untouched
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000000")
    with pytest.raises(ImageLoadError, match=r"pixel cap of 1\.0 Mpx"):
        load_image(png)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=MAX_PIXELS_ENV):
        load_image(png)


def test_a_large_image_under_the_cap_is_reduced(tmp_path: Path) -> None:
    big = Image.new("RGB", (6000, 4000), (200, 30, 30))
    big.save(tmp_path / "big.jpg", quality=80)
    big.save(tmp_path / "big.png")
    for name in ("big.jpg", "big.png"):
        im = load_image(tmp_path / name)
        w, h = im.size
        assert KEEP_PIXELS <= w * h <= 6000 * 4000 // 4 and abs(w / h - 1.5) < 0.01 and im.mode == "RGB"
        assert im.getpixel((w // 2, h // 2))[0] > 150  # still the same picture
    small = make_image(1, (64, 48))
    assert load_image(small).tobytes() == small.tobytes()  # small images are exactly as before


MEASURE = """
import sys
from pathlib import Path
from uniretrieve.models.images import ImageLoadError, load_image
refused, batch = 0, []  # a batch holds all its decoded images at once, as encode's does
for p in sorted(Path(sys.argv[1]).glob("*.png")):
    try:
        batch.append(load_image(p))
    except ImageLoadError:
        refused += 1
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would report the parent pytest's peak
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]
print(refused, peak)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc")
def test_a_batch_of_hostile_images_stays_small_in_memory(tmp_path: Path) -> None:
    one = bomb_png(tmp_path / "bomb-00.png").read_bytes()
    for i in range(1, 12):
        (tmp_path / f"bomb-{i:02d}.png").write_bytes(one)
    under = bomb_png(tmp_path / "under-00.png", 7900, 7900).read_bytes()  # 62 Mpx: decoded, then reduced
    for i in range(1, 4):
        (tmp_path / f"under-{i:02d}.png").write_bytes(under)
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    refused, max_rss_kib = map(int, out.stdout.split())
    assert refused == 12
    # one 12000×12000 decode alone would be 432 MB; the four kept images are ~7 Mpx each after reduction
    assert max_rss_kib < 600 * 1024, f"peak RSS {max_rss_kib / 1024:.0f} MiB"


def test_encode_skips_and_records_an_image_over_the_cap(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    make_image(0, (40, 32)).save(root / "ok.png")
    bomb_png(root / "bomb.png")
    out = tmp_path / "emb"
    res = CliRunner().invoke(
        app,
        ["encode", str(root), "-o", str(out), "-m", str(tiny_model_dir), "--no-progress", "--device", "cpu"],
        env={"COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert res.exit_code == 0, res.output
    assert "skipped: image too large" in res.output
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and errors[0]["id"].endswith("bomb.png")
    assert "12000×12000" in errors[0]["reason"] and "pixel cap" in errors[0]["reason"]
