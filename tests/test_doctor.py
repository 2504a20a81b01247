import os
import shutil
import stat

import pytest

from steve1_env.cli import main
from steve1_env.doctor import PIECES, missing_pieces, run_checks
from steve1_env.errors import ConfigurationError


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


def paper_prompts(directory):
    import numpy as np

    from steve1_env.prompt.visual_prompts import PAPER_VISUAL_PROMPT_NAMES, VISUAL_PROMPTS_FILE

    rng = np.random.default_rng(0)
    table = {n: rng.standard_normal(512).astype(np.float32) for n in PAPER_VISUAL_PROMPT_NAMES}
    np.savez(directory / VISUAL_PROMPTS_FILE, **table)


def test_doctor_require_exits_1_naming_the_missing_pieces(tmp_path, monkeypatch, capsys):
    fake_java(tmp_path, "17.0.15")
    monkeypatch.setenv("PATH", str(tmp_path))
    argv = ["doctor", "--dir", str(tmp_path), "--require", "visual-prompts,minerl"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert out.rstrip().endswith(
        "required but missing: visual-prompts, minerl (see the fixes above)"
    )
    # Once the prompts are there, only what is still missing is named.
    paper_prompts(tmp_path)
    assert main(argv) == 1
    assert "required but missing: minerl (" in capsys.readouterr().out
    assert main(["doctor", "--dir", str(tmp_path), "--require", " visual-prompts "]) == 0
    assert "every required piece is there: visual-prompts" in capsys.readouterr().out
    # Without --require, what is missing does not fail the command.
    assert main(["doctor", "--dir", str(tmp_path)]) == 0


def test_doctor_refuses_an_unknown_piece_before_checking(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["doctor", "--require", "minerl,weight"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "unknown piece 'weight' (did you mean 'weights'?)" in err and "steve1-official" in err
    with pytest.raises(ConfigurationError, match="Unknown pieces nothing"):
        missing_pieces([], ["nothing"])


@pytest.mark.parametrize("given", ["", " ", ",", " , ,"])
def test_doctor_refuses_a_require_that_names_no_piece(given, capsys):
    # `--require "$PIECES"` with the variable unset must not pass as "nothing required".
    with pytest.raises(SystemExit) as caught:
        main(["doctor", "--require", given])
    assert caught.value.code == 2
    assert "--require: names no piece" in capsys.readouterr().err


def test_doctor_names_a_piece_required_twice_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no xvfb-run: minerl is missing
    assert main(["doctor", "--dir", str(tmp_path), "--require", "minerl, minerl,minerl"]) == 1
    assert (
        capsys.readouterr()
        .out.rstrip()
        .endswith("required but missing: minerl (see the fixes above)")
    )


def test_doctor_help_describes_it_and_its_pieces(capsys):
    with pytest.raises(SystemExit):
        main(["doctor", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Check torch and CUDA, Java 8 and xvfb-run" in out and "Exits 1 if" in out
    for piece in PIECES:
        assert f"{piece}:" in out


def test_doctor_speaks_cli_and_names_the_extras_both_ways(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    checks = by_name(run_checks(tmp_path))
    for name, extra in (("MineStudio", "minestudio"), ("MineRL", "minerl")):
        fix = checks[name].fix
        assert f'pip install "steve1-env[{extra}]"' in fix and f'pip install -e ".[{extra}]"' in fix
    assert checks["MineRL"].piece == checks["java (MineRL)"].piece == "minerl"
    assert "steve1-env[" not in checks["official steve1 package"].fix  # no extra brings it
    main(["doctor", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "--policy scripted (or --weights random)" in out and "policy='" not in out
