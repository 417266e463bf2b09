"""One run policy for every caller (issue 20): :class:`RunSettings` holds every ``stream`` option with the CLI's
defaults (the options read them from there), makes the pipeline's configuration and opens the engine;
``summary.json`` records the settings and ``stream --config FILE`` (TOML, YAML, or an earlier summary.json) takes
them back, the options typed on the command line winning."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
from fakes import FakeEngine

from textsam_eus.cli import build_parser, main
from textsam_eus.core.errors import OptionError, UserError
from textsam_eus.runs import RunSettings, SettingsFileError, default, field_names, read_settings_file
from textsam_eus.stream.sources import ImageFolderSource, PhantomSource


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in p._actions if a.option_strings and not isinstance(a, argparse._HelpAction)}


def test_the_stream_options_are_the_run_settings_with_their_defaults():
    options = _options(_subparser("stream"))
    assert set(options) - {"config"} == set(field_names())
    for name in field_names():
        assert options[name].default == default(name), name
    # demo and annotate take the shared groups with the same defaults (annotate's --workers are Ray actors)
    for command in ("demo", "annotate"):
        for name, action in _options(_subparser(command)).items():
            if name in field_names() and name not in ("workers", "out", "source"):
                assert action.default == default(name), (command, name)


def test_pipeline_config_has_the_clis_defaults():
    settings = RunSettings()
    with PhantomSource(n_frames=2, width=64, height=48) as video:
        cfg = settings.to_pipeline_config(video, workers=1)
    assert cfg.roi == "auto" and cfg.html_report and cfg.write_video and cfg.masks == "png" and cfg.presence
    assert cfg.settings == settings.to_dict() and json.loads(json.dumps(cfg.settings)) == cfg.settings
    assert (cfg.style.fill_color, cfg.style.contour_color, cfg.style.fill_alpha) == ((255, 64, 64), (255, 255, 0),
                                                                                       0.35)


def test_roi_and_workers_follow_the_source(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    for i in range(2):
        cv2.imwrite(str(tmp_path / f"s{i}.png"), np.full((32, 32), 90, np.uint8))
    with ImageFolderSource(tmp_path) as stills:
        assert RunSettings().roi_for(stills) is None  # image folders: the whole frame
        assert RunSettings(roi="auto").roi_for(stills) == "auto"
    with PhantomSource(n_frames=2, width=64, height=48) as video:
        assert RunSettings(roi="none").roi_for(video) is None
        assert str(RunSettings(roi="1,2,30,20").roi_for(video)) == "1,2,30,20"
        with pytest.raises(Exception, match="60"):  # a fixed ROI that does not fit the frames
            RunSettings(roi="10,10,60,60").roi_for(video)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    cpu = RunSettings(device="cpu")
    assert cpu.plan_workers(live=False) == (2, 2) and cpu.plan_workers(live=True) == (1, None)
    assert RunSettings(device="cpu", temporal=True).plan_workers(live=False) == (1, None)
    assert RunSettings(device="cpu", workers="3", threads=1).plan_workers(live=False) == (3, 1)


@pytest.mark.parametrize("changes, needle", [
    ({"max_frames": "ten"}, "max_frames='ten' is invalid"),
    ({"max_frames": 0}, "--max-frames 0 is invalid"),
    ({"iterations": 10 ** 9}, "--iterations 1000000000 is invalid"),
    ({"workers": "0"}, "--workers 0 is invalid"),
    ({"cuda_graphs": "yes"}, "cuda_graphs='yes' is invalid"),
    ({"attention": "fast"}, "--attention fast is invalid"),
    ({"temporal": True, "workers": "2"}, "--temporal"),
    ({"masks": "gif"}, "gif"),
    ({"roi": "1,2"}, "1,2"),
    ({"serve": "http"}, "--serve"),
    ({"checkpoint": None}, "checkpoint=None is invalid"),
])
def test_a_bad_setting_names_the_setting_and_the_value(changes, needle):
    with pytest.raises(UserError) as ei:
        RunSettings(**changes)
    assert needle in str(ei.value)
    with pytest.raises(UserError):
        RunSettings().replace(**changes)


def test_numbers_from_a_file_become_the_settings_types():
    s = RunSettings(workers=2, speed=2, realtime=True, alpha=1)
    assert (s.workers, s.speed, s.alpha) == ("2", 2.0, 1.0)
    with pytest.raises(OptionError, match="unknown run setting 'frames'"):
        RunSettings().replace(frames=3)


# ------------------------------------------------------------------ settings files


def test_a_toml_file_and_the_options_typed_over_it(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('max_frames = 2\nmasks = "video"\n"no-video" = true\nworkers = 1\n[ignored_not]\n')
    with pytest.raises(SettingsFileError, match="unknown setting 'ignored_not'; valid settings: source, realtime"):
        read_settings_file(f)
    f.write_text('max_frames = 2\nmasks = "video"\n"no-video" = true\nworkers = 1\n')
    assert read_settings_file(f) == {"max_frames": 2, "masks": "video", "no_video": True, "workers": 1}
    args = build_parser().parse_args(["stream", "--config", str(f), "--source", "phantom:3", "--out", "o",
                                      "--masks", "png"])
    from textsam_eus.commands.stream import settings_of

    s = settings_of(args)
    # --masks png is the default, and it was typed: it wins over the file's "video"; the rest is the file's
    assert (s.masks, s.max_frames, s.no_video, s.workers, s.source) == ("png", 2, True, "1", "phantom:3")
    assert s.engine == default("engine")  # neither in the file nor typed: the default


def test_a_yaml_file(tmp_path, monkeypatch):
    pytest.importorskip("yaml")
    f = tmp_path / "run.yaml"
    f.write_text("settings:\n  max_frames: 4\n  roi: none\n")
    assert read_settings_file(f) == {"max_frames": 4, "roi": "none"}
    import textsam_eus.core.imports as imports

    monkeypatch.setattr(imports, "is_yaml_available", lambda: False)
    with pytest.raises(Exception, match="pip install pyyaml"):
        read_settings_file(f)


@pytest.mark.parametrize("name, text, needle", [
    ("a.toml", "max_frames = ", "not valid TOML"),
    ("a.json", '{"complete": true, "frames_out": 3}', 'no "settings"'),
    ("a.ini", "x=1", "unknown kind of file '.ini'"),
    ("missing.toml", None, "cannot read it"),
])
def test_a_bad_settings_file_is_a_one_line_error(tmp_path, capsys, name, text, needle):
    f = tmp_path / name
    if text is not None:
        f.write_text(text)
    assert main(["stream", "--config", str(f), "--source", "phantom:2", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err and str(f) in err, err
    assert not (tmp_path / "o").exists()


def test_an_unknown_key_lists_the_valid_ones(tmp_path, capsys):
    f = tmp_path / "run.toml"
    f.write_text("max_frame = 3\n")
    assert main(["stream", "--config", str(f), "--source", "phantom:2", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown setting 'max_frame'" in err and "max_frames" in err, err


def test_stream_without_a_source_says_what_is_missing(capsys):
    assert main(["stream", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert "required: --source" in err and "--config" in err


# ------------------------------------------------------------------ a run repeated from its summary


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from textsam_eus.model.checkpoint import save_checkpoint
    from textsam_eus.model.registry import build_textsam

    return str(save_checkpoint(build_textsam("tiny"), tmp_path_factory.mktemp("ckpt") / "m.safetensors"))


@pytest.mark.slow
def test_a_run_repeated_from_its_summary_gives_the_same_settings_and_masks(tmp_path, ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "first"
    assert main(["stream", "--source", "phantom:3", "--out", "first", "--checkpoint", ckpt,
                 "--engine", "torch", "--device", "cpu", "--no-progress", "--no-report", "--iterations", "1",
                 "--masks", "png,coco", "--alpha", "0.5", "--width", "96", "--height", "64"]) == 0
    settings = json.loads((first / "summary.json").read_text())["settings"]
    assert settings["out"] == str(first.absolute()) and settings["checkpoint"] == ckpt
    assert (settings["iterations"], settings["masks"], settings["alpha"], settings["no_report"]) == (1, "png,coco",
                                                                                                      0.5, True)
    assert set(settings) == set(field_names())
    assert main(["stream", "--config", str(first / "summary.json"), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())["settings"]
    assert {**again, "out": None} == {**settings, "out": None} and again["out"] == str(tmp_path / "again")
    masks = sorted(p.name for p in (first / "masks").iterdir())
    assert len(masks) == 3 and any(b != 0 for b in _pixels(first / "masks" / masks[0]))  # outlines, not blanks
    for name in masks:
        assert (first / "masks" / name).read_bytes() == (tmp_path / "again" / "masks" / name).read_bytes(), name


def _pixels(path: Path) -> bytes:
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).tobytes()


@pytest.mark.slow
def test_a_settings_file_reaches_the_summary(tmp_path, ckpt):
    """``--config`` values are used (max_frames 2 of a phantom of 5) and recorded, typed options win."""
    f = tmp_path / "run.toml"
    f.write_text(f'source = "phantom:5"\nmax_frames = 2\nmasks = "none"\ncheckpoint = "{ckpt}"\nengine = "torch"\n'
                 'device = "cpu"\nno_report = true\nno_video = true\nworkers = 1\n')
    out = tmp_path / "o"
    assert main(["stream", "--config", str(f), "--out", str(out), "--no-progress", "--width", "48",
                 "--height", "48"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_out"] == 2 and summary["settings"]["max_frames"] == 2
    assert summary["settings"]["width"] == 48 and summary["settings"]["source"] == "phantom:5"


# ------------------------------------------------------------------ the engine


def test_open_engine_names_the_export_into_the_cache(tmp_path, monkeypatch, ckpt):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("TEXTSAM_EUS_CACHE", str(tmp_path / "cache"))
    settings = RunSettings(engine="onnxruntime", checkpoint=ckpt)
    with pytest.raises(OptionError, match="no ONNX export of .* in the cache"):
        settings.open_engine(export_to_cache=False)
    assert not (tmp_path / "cache").exists()  # refused, nothing exported


def test_open_engine_gives_the_settings_to_the_engine(tiny_model):
    engine = RunSettings(engine="torch", device="cpu", iterations=1, refine_prompts="box",
                         resize="bilinear").open_engine(model=tiny_model)
    assert (engine.name, engine.iterations, engine.segmenter.refine_prompts, engine.resize) == (
        "torch", 1, "box", "bilinear")


def test_the_worker_and_the_demo_run_stream_settings(tmp_path):
    """annotate's per-file settings and the demo's are RunSettings: the same pipeline configuration as stream."""
    from textsam_eus.commands.annotate import file_settings
    from textsam_eus.commands.demo import demo_settings

    args = build_parser().parse_args(["annotate", "--source", "a", "--out", "b", "--masks", "coco", "--workers",
                                      "3"])
    per_file = file_settings(args)
    assert per_file.overwrite and per_file.masks == "coco" and per_file.workers == "auto"
    demo = demo_settings(build_parser().parse_args(["demo", "--out", str(tmp_path / "d")]))
    with PhantomSource(n_frames=2, width=64, height=48) as src:
        cfg = demo.to_pipeline_config(src, workers=1)
    assert cfg.roi is None and cfg.html_report and cfg.workers == 1
    # picklable (Ray sends it to the workers), and equal after the trip
    import pickle

    assert pickle.loads(pickle.dumps(per_file)) == per_file
    assert dataclasses.asdict(per_file) == per_file.to_dict()


def test_a_fake_engine_runs_with_the_settings_recorded(tmp_path):
    from textsam_eus.stream.pipeline import StreamPipeline

    settings = RunSettings(masks="none", no_video=True, no_report=True).for_job("phantom:2", tmp_path / "o")
    with PhantomSource(n_frames=2, width=64, height=48) as src:
        summary = StreamPipeline(FakeEngine(), src, tmp_path / "o", settings.to_pipeline_config(src, 1)).run()
    assert summary["settings"] == settings.to_dict()
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["settings"]["out"] == str(tmp_path / "o")


def test_the_settings_need_no_torch_to_import():
    """``textsam-eus --help`` reads the defaults from here: importing the settings pulls in no torch."""
    import subprocess
    import sys

    code = "import sys, textsam_eus.runs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"
