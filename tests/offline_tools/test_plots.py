"""Training curves: one PNG per run, written as a palette PNG that a shipped folder can afford."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from offline_tools.training.plots import compact_png, plot_training_log


def test_curves_are_a_palette_png_of_the_logged_run(tmp_path: Path) -> None:
    log = tmp_path / "training_log.jsonl"
    events = [{"event": "train", "step": s, "loss": 1.0 / s} for s in range(1, 30)]
    events += [{"event": "validation", "step": s, "gain": 1.0, "loss": 0.5, "loss_closed": 2.0, "em": 50.0 + s,
                "em_closed": 1.0, "f1": 55.0, "alpha_mean": 0.3, "alpha_min": 0.1, "alpha_max": 0.9}
               for s in (0, 15, 29)]
    log.write_text("".join(json.dumps(e) + "\n" for e in events) + '{"event": "tra')  # a torn last line
    png = plot_training_log(log, tmp_path / "curves.png")
    with Image.open(png) as picture:
        assert picture.mode == "P" and picture.size == (1440, 320)
        assert 8 < len(picture.getcolors(256)) <= 16  # lines in several colours, not a blank image; 16 at most
    (tmp_path / "empty.jsonl").write_text("")
    assert plot_training_log(tmp_path / "empty.jsonl", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_compact_png_keeps_every_pixel_of_a_plot_and_is_smaller(tmp_path: Path) -> None:
    source = tmp_path / "rgba.png"
    picture = Image.new("RGBA", (600, 200), "white")
    draw = ImageDraw.Draw(picture)
    for i, colour in enumerate(("#1f77b4", "#ff7f0e", "#2ca02c", "black")):
        draw.line([(0, 20 + 40 * i), (599, 180 - 30 * i)], fill=colour, width=2)
    picture.save(source)
    target = compact_png(source, tmp_path / "out" / "compact.png")
    with Image.open(target) as compact:
        assert compact.mode == "P"
        assert list(compact.convert("RGB").getdata()) == list(picture.convert("RGB").getdata())
    assert target.stat().st_size < source.stat().st_size
    assert compact_png(source, tmp_path / "again.png").read_bytes() == target.read_bytes()  # deterministic


def test_serving_bench_record_is_drawn_per_scheduler(tmp_path: Path) -> None:
    from offline_tools.training.plots import plot_serving_bench

    record = {"continuous_rps_at_1": 5.6, "continuous_rps_at_8": 11.5, "static_rps_at_1": 4.5, "static_rps_at_8": 13.1,
              "continuous_p95_ms_at_1": 250.0, "continuous_p95_ms_at_8": 998.0, "static_p95_ms_at_8": 697.0,
              "unadapted_rps_at_8": 15.6, "inplace_rps": 5.5, "machine": "test box"}
    png = plot_serving_bench(record, tmp_path / "serving.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        assert image.mode == "P" and image.width > image.height
