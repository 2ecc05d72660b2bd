"""docs/own-model.md, followed as written: its config, on a folder of PNGs and an smp FPN
checkpoint made here, passes `xaibench layers` and `xaibench validate` (its first two commands)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
from PIL import Image

from xaibench.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "own-model.md"


def test_the_own_model_page_works_as_written(tmp_path, monkeypatch, capsys):
    text = DOC.read_text(encoding="utf-8")
    assert "xaibench layers mine.toml" in text and "xaibench validate mine.toml" in text and "xaibench run mine.toml" in text
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XAIBENCH_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for k in range(12):
        for d in ("images", "masks"):
            (tmp_path / "data" / d).mkdir(parents=True, exist_ok=True)
        mask = np.zeros((64, 64), np.uint8)
        mask[10 + k : 26 + k, 20:36] = 255
        Image.fromarray(rng.integers(0, 255, (64, 64, 3)).astype(np.uint8)).save(tmp_path / "data" / "images" / f"tile{k:02d}.png")
        Image.fromarray(mask).save(tmp_path / "data" / "masks" / f"tile{k:02d}.png")
    torch.save(smp.FPN(encoder_name="resnet18", encoder_weights=None, classes=1).state_dict(), tmp_path / "fpn.pt")  # as the page says
    (tmp_path / "mine.toml").write_text(re.findall(r"```toml\n(.*?)```", text, re.S)[0])
    assert main(["layers", "mine.toml", "--depth", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"decoder\s+decoder1\s+FPNDecoder\s+1x128x16x16\s+128\s+yes", out), out
    assert main(["validate", "mine.toml"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: mine.toml: 33 cells on image_folder/test") and "score_cam@decoder1 128" in out
