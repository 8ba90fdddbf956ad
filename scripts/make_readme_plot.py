"""Regenerate the README's plot, ``docs/img/seed000.png``, from the seed-000 sample.

    python scripts/make_readme_plot.py [OUT]

Deterministic: the figure is drawn without pyplot and saved with fixed metadata, then reduced to a
64-colour palette (no dithering) so the committed file stays small (< 150 KB) and byte-identical on every
run with the same matplotlib and Pillow.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image

import plateau_forensics as pf

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img" / "seed000.png"


def render(out: Path = OUT) -> Path:
    """Draw the seed-000 trace and write it to ``out`` as a palette PNG."""
    samples = ROOT / "sample_checkpoints"
    t = pf.trace(samples / "seed000.pt", samples / "seed000.csv")
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "seed000.png"
        t.plot(full)
        with Image.open(full) as img:
            small = img.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT,
                                                dither=Image.Dither.NONE)
    out.parent.mkdir(parents=True, exist_ok=True)
    small.save(out, format="PNG", optimize=True)
    return out


if __name__ == "__main__":
    path = render(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
