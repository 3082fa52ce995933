"""The coordinate check passes for mup and fails for sp on the same widths; its CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from scaling.cli.main import main
from scaling.errors import ConfigError
from scaling.model.coordcheck import SLOPE_THRESHOLD, coord_check, slope_table
from scaling.model.shape import ModelShape

WIDTHS = (32, 128)  # two widths, a factor 4: each width is one compilation per parametrization


def _template(parametrization: str) -> ModelShape:
    return ModelShape(
        d_model=32,
        n_layers=1,
        n_heads=4,
        vocab_size=32,
        context=8,
        parametrization=parametrization,
        base_d_model=32,
    )


@pytest.fixture(scope="module")
def checks():
    return {
        p: coord_check(_template(p), WIDTHS, steps=2, lr=1e-2, seeds=1, batch_size=8)
        for p in ("sp", "mup")
    }


def test_mup_passes_and_sp_fails_on_the_same_widths(checks):
    sp, mup = checks["sp"], checks["mup"]
    assert sp.sizes == mup.sizes == WIDTHS
    assert mup.threshold == sp.threshold == SLOPE_THRESHOLD
    assert mup.passed, slope_table([mup])
    assert not sp.passed, slope_table([sp])
    # sp's failure is a blow-up (slope ~ +1: logits and attention logits grow with width), not
    # a near miss; mup's coordinates do not grow.
    assert sp.worst[2] > SLOPE_THRESHOLD + 0.3
    assert max(float(np.max(s)) for s in mup.slopes.values()) <= SLOPE_THRESHOLD


def test_every_activation_is_recorded_at_every_step(checks):
    c = checks["mup"]
    names = {"embed", "logits", "attn_logits.0", "block.0"}
    assert set(c.rms) == names
    for v in c.rms.values():
        assert v.shape == (len(WIDTHS), c.steps + 1) and np.all(v > 0)
    # the slope is the least-squares slope of log RMS on log width
    x, y = np.log(WIDTHS), np.log(c.rms["logits"][:, -1])
    assert c.slopes["logits"][-1] == pytest.approx(np.polyfit(x, y, 1)[0])
    # mup at its base width is sp: same activations at width 32, every step
    np.testing.assert_allclose(checks["sp"].rms["logits"][0], c.rms["logits"][0], rtol=1e-6)


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError) as e:
        coord_check(_template("mup"), [32], steps=1)
    assert e.value.field == "sizes"
    with pytest.raises(ConfigError) as e:
        coord_check(_template("mup"), [32, 64], axis="height")
    assert e.value.field == "axis"
    with pytest.raises(ConfigError):
        coord_check(_template("mup"), [32, 64], steps=0)


def test_cli_prints_the_table_and_verdict_and_writes_the_plot(
    checks, tmp_path, capsys, monkeypatch
):
    """The command around coord_check (the measurement itself is the fixture's, reused)."""
    import scaling.model.coordcheck as cc

    calls = []

    def measured(template, sizes, **kw):
        calls.append((template, tuple(sizes), kw))
        return checks[template.parametrization]

    monkeypatch.setattr(cc, "coord_check", measured)
    png, out = tmp_path / "cc.png", tmp_path / "cc.json"
    code = main(["coordcheck", "--sizes", "32,128", "--plot", str(png), "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0  # sp fails, but sp is the control: only mup's failure fails the command
    assert "slope of log RMS vs log width over [32, 128]" in text
    assert "sp         FAIL" in text and "mup        PASS" in text
    assert [c[0].parametrization for c in calls] == ["sp", "mup"]
    assert all(c[0].base_d_model == 32 and c[1] == (32, 128) for c in calls)
    assert png.stat().st_size > 0
    records = json.loads(out.read_text())
    assert [(r["parametrization"], r["passed"]) for r in records] == [("sp", False), ("mup", True)]
    failing = dataclasses.replace(checks["sp"], parametrization="mup")
    monkeypatch.setattr(cc, "coord_check", lambda t, s, **kw: failing)
    assert main(["coordcheck", "--parametrization", "mup", "--sizes", "32,64"]) == 1


def test_cli_user_errors_are_one_line(capsys):
    assert main(["coordcheck", "--sizes", "32"]) == 2
    assert main(["coordcheck", "--parametrization", "mop", "--sizes", "16,32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("scaling coordcheck: error:") for line in err)


@pytest.mark.slow
def test_depth_check_passes_for_mup_depth_and_fails_for_mup():
    """Over depth, mup's residual stream grows (every block adds a Θ(lr) change); mup-depth's
    branch and learning-rate multipliers keep it put."""
    out = {}
    for p in ("mup", "mup-depth"):
        template = ModelShape(
            d_model=32,
            n_layers=1,
            n_heads=4,
            vocab_size=32,
            context=8,
            parametrization=p,
            base_d_model=32,
            base_n_layers=1,
        )
        out[p] = coord_check(template, (1, 4), axis="depth", steps=3, seeds=1)
    assert out["mup-depth"].passed, slope_table([out["mup-depth"]])
    assert not out["mup"].passed, slope_table([out["mup"]])
    assert out["mup"].worst[0] == "block.last"
