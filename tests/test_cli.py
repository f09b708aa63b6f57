"""The `hicmae` command itself: what starting it imports, its help, and the demo data it writes by default."""

import dataclasses
import inspect
import subprocess
import sys

import pytest

import hicmae.data
import hicmae.data.demo
from hicmae import demo as demo_driver
from hicmae.cli import main
from hicmae.data.demo import DEMO, make_demo_data

HEAVY = ("torch", "pytorch_lightning", "lightning")


def _imported_by(code: str) -> list[str]:
    """The heavy libraries a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split()


def test_building_the_parser_imports_no_training_stack():
    assert _imported_by("from hicmae.cli import build_parser; build_parser()") == []


@pytest.mark.parametrize("command", ["validate", "make-demo-data", "kfold", "predict", "export"])
def test_command_help_imports_no_training_stack(command):
    code = ("import contextlib, io\nfrom hicmae.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            f"    try:\n        main([{command!r}, '--help'])\n    except SystemExit:\n        pass\n"
            f"assert 'usage: hicmae {command}' in out.getvalue(), out.getvalue()")
    assert _imported_by(code) == []


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("validate", "make-demo-data", "kfold", "predict", "export"):
        assert command in out


def test_make_demo_data_help_shows_the_demo_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["make-demo-data", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for flag, value in [("--num-clips", DEMO.num_clips), ("--size", DEMO.size), ("--seconds", DEMO.seconds),
                        ("--num-folds", DEMO.num_folds), ("--static-cues", DEMO.static_cues)]:
        assert flag in out and f"(default: {value})" in out


class _Stop(Exception):
    pass


def _resolved(call: inspect.BoundArguments) -> dict:
    call.apply_defaults()
    return {k: v for k, v in call.arguments.items() if k not in ("out_dir", "workers", "progress")}


def test_make_demo_data_cli_writes_the_data_make_demo_trains_on(tmp_path, monkeypatch):
    """`hicmae make-demo-data DIR` with no option, and `make demo` (python -m hicmae.demo), generate the
    same dataset: both resolve to the same make_demo_data arguments, the demo's settings (DEMO)."""
    calls = []

    def record(*args, **kwargs):
        calls.append(_resolved(inspect.signature(make_demo_data).bind(*args, **kwargs)))
        return tmp_path

    monkeypatch.setattr(hicmae.data.demo, "make_demo_data", record)
    monkeypatch.setattr(hicmae.data, "make_demo_data", record)
    monkeypatch.setattr(demo_driver, "make_demo_data", record)
    assert main(["make-demo-data", str(tmp_path / "cli")]) == 0

    def stop(*args, **kwargs):
        raise _Stop  # the data step is all this test runs of the demo

    monkeypatch.setattr(demo_driver, "pretrain", stop)
    with pytest.raises(_Stop):
        demo_driver.main(["--out", str(tmp_path / "demo")])
    assert len(calls) == 2
    assert calls[0] == calls[1] == dataclasses.asdict(DEMO)
