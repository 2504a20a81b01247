import os
import shutil
import stat

from steve1_env.cli import main
from steve1_env.doctor import run_checks


def fake_java(directory, version):
    script = directory / "java"
    script.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2023-01-17' >&2\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def by_name(checks):
    return {check.name: check for check in checks}


def test_doctor_reports_java_xvfb_and_weights(tmp_path, monkeypatch, tiny_policy_files):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_java(bin_dir, "1.8.0_392")
    xvfb = bin_dir / "xvfb-run"
    xvfb.write_text("#!/bin/sh\n")
    xvfb.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(tiny_policy_files["model"], weights / "2x.model")  # a real .model file
    checks = by_name(run_checks(weights))
    assert checks["java (MineRL)"].ok and "1.8.0_392" in checks["java (MineRL)"].detail
    assert checks["xvfb-run (MineRL)"].ok
    assert checks["weights: 2x.model"].ok and "no checksum" in checks["weights: 2x.model"].detail
    assert not checks["weights: attn.pth"].ok
    assert checks["weights: attn.pth"].fix == "steve1-env weights download"
    assert not checks["MineRL"].ok and "minerl@v1.0.2" in checks["MineRL"].fix


def test_doctor_flags_a_java_that_is_not_8(tmp_path, monkeypatch, capsys):
    fake_java(tmp_path, "17.0.15")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["doctor", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "-- java (MineRL)              version 17.0.15" in out and "needs Java 8" in out
    assert "-- xvfb-run (MineRL)          not found" in out


def test_doctor_catches_corrupt_weights_and_broken_packages(tmp_path, monkeypatch):
    (tmp_path / "attn.pth").write_bytes(b"not mineclip")
    broken = tmp_path / "pkgs" / "minestudio"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("import minedojo_is_missing\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "pkgs"))
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    checks = by_name(run_checks(tmp_path))
    assert not checks["weights: attn.pth"].ok and "mismatch" in checks["weights: attn.pth"].detail
    assert not checks["MineStudio"].ok and "minedojo_is_missing" in checks["MineStudio"].detail
