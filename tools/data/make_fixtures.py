"""Regenerates exvit-data's decoding fixtures: small images with the quirks of real datasets
(CMYK and YCCK JPEG, grayscale JPEG, 4:2:0 and 4:4:4 JPEG, a PNG named .JPEG, palette GIF, palette PNG
with transparency, RGBA, 16-bit PNG) written by Pillow, and Pillow's own decoding of each,
`Image.open(p).convert('RGB')`, as the reference (tests/fixtures/data/reference.safetensors).

  tools/parity/setup.sh   # the shared venv
  ~/.cache/exvit/parity-venv/bin/pip install -r tools/data/requirements.txt
  ~/.cache/exvit/parity-venv/bin/python tools/data/make_fixtures.py

Pillow cannot write YCCK, so that file is written by tools/data/ycck.c (built here with gcc
against the system libjpeg, Debian's libjpeg62-turbo-dev) from the CMYK image's bytes.
"""
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import PIL
from PIL import Image
from safetensors.numpy import save_file

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "data" / "images"


def scene(w=48, h=36):
    """A smooth gradient with edges and a bright disc: exercises chroma upsampling."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / (w - 1)
    g = 255 * y / (h - 1)
    b = 128 + 100 * np.sin(x / 3.0) * np.cos(y / 4.0)
    disc = (x - w * 0.6) ** 2 + (y - h * 0.4) ** 2 < (h / 4) ** 2
    r[disc], g[disc], b[disc] = 250, 240, 20
    return Image.fromarray(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8), "RGB")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    im = scene()
    files = {
        "rgb_420.jpg": lambda p: im.save(p, "JPEG", quality=90),
        "rgb_444.jpg": lambda p: im.save(p, "JPEG", quality=90, subsampling=0),
        "rgb_q50.jpg": lambda p: im.save(p, "JPEG", quality=50),
        "progressive.jpg": lambda p: im.save(p, "JPEG", quality=85, progressive=True),
        "gray.jpg": lambda p: im.convert("L").save(p, "JPEG", quality=90),
        "cmyk.jpg": lambda p: im.convert("CMYK").save(p, "JPEG", quality=95),
        "ycck.jpg": lambda p: _ycck(im, p),
        "png_named.JPEG": lambda p: im.save(p, "PNG"),
        "rgba.png": lambda p: im.convert("RGBA").putalpha(80) or _rgba(im).save(p, "PNG"),
        "gray.png": lambda p: im.convert("L").save(p, "PNG"),
        "palette.gif": lambda p: im.convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(p, "GIF"),
        "palette_trns.png": lambda p: _palette_trns(im).save(p, "PNG"),
        "gray16.png": lambda p: _gray16(im).save(p, "PNG"),
    }
    ref = {}
    for name, write in files.items():
        path = OUT / name
        write(path)
        ref[name] = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")))
    # DCT-scaled decoding (the loader's fast path) against Pillow's draft mode, which sets
    # libjpeg's scale_denom and keeps the accurate IDCT and fancy upsampling.
    for name in ["rgb_420.jpg", "progressive.jpg", "ycck.jpg"]:
        for denom in [2, 4]:
            with Image.open(OUT / name) as d:
                d.draft(d.mode, (-(-d.width // denom), -(-d.height // denom)))
                assert d.size == (-(-im.width // denom), -(-im.height // denom)), (name, denom, d.size)
                ref[f"{name}@{denom}"] = np.ascontiguousarray(np.asarray(d.convert("RGB")))
    save_file(ref, str(OUT.parent / "reference.safetensors"), metadata={"pillow": PIL.__version__})
    print(f"{len(files)} images in {OUT}, reference from Pillow {PIL.__version__}")


def _ycck(im, path):
    cmyk = im.convert("CMYK")
    # Pillow stores CMYK JPEGs Adobe-inverted ("CMYK;I"): write the same convention.
    raw = 255 - np.asarray(cmyk, dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        exe, src = Path(tmp) / "ycck", Path(tmp) / "in.cmyk"
        subprocess.run(["gcc", "-O2", str(Path(__file__).with_name("ycck.c")), "-ljpeg", "-o", str(exe)], check=True)
        src.write_bytes(np.ascontiguousarray(raw).tobytes())
        subprocess.run([str(exe), str(im.width), str(im.height), str(src), str(path)], check=True)
    assert Image.open(path).mode == "CMYK"


def _rgba(im):
    a = im.convert("RGBA")
    a.putalpha(Image.linear_gradient("L").resize(im.size))
    return a


def _palette_trns(im):
    p = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    p.info["transparency"] = 3
    return p


def _gray16(im):
    g = np.asarray(im.convert("L"), dtype=np.uint16) * 257 + 3
    return Image.fromarray(g.astype(np.uint16))


def make_devkit():
    """A small devkit `meta.mat` as scipy writes it (struct array `synsets`, fields as in the
    real devkit). Its ILSVRC2012_IDs deliberately do not follow the sorted-wnid order, and one
    entry is a non-leaf node (id 1001), as in the real file."""
    from scipy.io import savemat

    wnids = ["n04579432", "n01440764", "n02123045", "n09999999", "n03000134"]
    ids = [1, 2, 3, 1001, 4]
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"),
             ("num_children", "O"), ("children", "O"), ("wordnet_height", "O"), ("num_train_images", "O")]
    synsets = np.zeros((len(ids), 1), dtype=dtype)
    for i, (k, w) in enumerate(zip(ids, wnids)):
        synsets[i, 0] = (np.array([[float(k)]]), w, f"words {w}", "gloss", np.array([[0.0]]),
                         np.zeros((1, 0)), np.array([[0.0]]), np.array([[1300.0]]))
    out = OUT.parent / "devkit"
    out.mkdir(exist_ok=True)
    savemat(str(out / "meta.mat"), {"synsets": synsets}, do_compression=True)
    print(f"{out / 'meta.mat'}: {len(ids)} synsets")


if __name__ == "__main__":
    main()
    make_devkit()
