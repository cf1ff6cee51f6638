"""Do a model's E5-V embeddings match images with their captions? Cosine gap and R@1 on held-out scenes.

    python -m probes.pair_gap MODEL [MODEL ...] --data runs/unime-tiny/data/short -n 200

For the first n images of a Flickr-layout test split (the generated `short/` folder) and their first captions:
the mean cosine of matching image–caption pairs vs non-matching ones, mean image–image and text–text cosine
(how spread the vectors are), and R@1 in both directions among the n (chance 1/n). A quick check between training
steps; the full benchmarks are `uniretrieve eval`.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    import pyarrow.parquet as pq

    from uniretrieve import Encoder
    from uniretrieve.models.images import load_image_bytes

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", required=True, help="a Flickr-layout folder (…/data/test-*.parquet)")
    ap.add_argument("-n", type=int, default=200)
    a = ap.parse_args()
    files = sorted(p for p in __import__("pathlib").Path(a.data).rglob("*.parquet"))
    rows = pq.read_table(files[0]).to_pylist()[: a.n]
    images = [load_image_bytes(r["image"]["bytes"], f"{files[0]} row {i}") for i, r in enumerate(rows)]
    captions = [r["text"][0] for r in rows]
    n = len(rows)
    off = ~np.eye(n, dtype=bool)
    for m in a.models:
        enc = Encoder.from_pretrained(m, device="cpu")
        img, txt = enc.encode_images(images), enc.encode_texts(captions)
        it = img @ txt.T
        print(
            f"{m}: matching {np.trace(it) / n:.3f} vs other {it[off].mean():.3f}; image–image {(img @ img.T)[off].mean():.3f}, "
            f"text–text {(txt @ txt.T)[off].mean():.3f}; R@1 I→T {100 * (it.argmax(1) == np.arange(n)).mean():.1f} %, "
            f"T→I {100 * (it.argmax(0) == np.arange(n)).mean():.1f} % (chance {100 / n:.1f} %)"
        )


if __name__ == "__main__":
    main()
