"""Error profiles: fits, save/load/sample round trip, noise mode, and the emulator's KS fidelity."""

import numpy as np
import pytest
import torch

from privinf.errormodel import HEADLINE, Profile, fit_site, ks_two_sample


def _profile(up_std=0.03, down_b=0.02, n=50_000):
    rng = np.random.default_rng(0)
    sites = {"up": fit_site(rng.normal(0, up_std, n)), "down": fit_site(rng.laplace(0, down_b, n))}
    return Profile(card="bolt", backend="plaintext", model="synthetic", layers=[0, 1], tokens=n, seed=0,
                   sites=sites, reference={"error_up_std": 0.042, "error_down_b": 0.036})


def test_fits_recover_parameters_and_prefer_the_right_family():
    prof = _profile()
    assert prof.fit("up")["scale"] == pytest.approx(0.03, rel=0.02)
    assert prof.fit("down")["scale"] == pytest.approx(0.02, rel=0.02)
    up, down = prof.sites["up"]["fits"], prof.sites["down"]["fits"]
    assert up["gaussian"]["ks"] < 0.01 < up["laplace"]["ks"]
    assert down["laplace"]["ks"] < 0.01 < down["gaussian"]["ks"]
    assert len(prof.sites["up"]["quantiles"]) == 1001


def test_round_trip_save_load_sample(tmp_path):
    prof = _profile()
    path = prof.save(tmp_path / "p.json")
    back = Profile.load(path)
    assert back == prof
    assert back.noise("up") == ("gaussian", prof.fit("up")["scale"])
    assert back.noise("down") == ("laplace", prof.fit("down")["scale"])
    g = torch.Generator().manual_seed(0)
    for site in ("up", "down"):
        for method in ("fit", "empirical"):
            s = back.sample(site, (40_000,), generator=g, method=method).numpy()
            assert ks_two_sample(s, _ref_sample(site))["ks"] < 0.02, (site, method)
    with pytest.raises(ValueError, match="not a privinf error profile"):
        (tmp_path / "bad.json").write_text('{"format": "other"}')
        Profile.load(tmp_path / "bad.json")


def _ref_sample(site):
    rng = np.random.default_rng(7)
    return rng.normal(0, 0.03, 40_000) if site == "up" else rng.laplace(0, 0.02, 40_000)


def test_noise_mode_samples_the_profile(tmp_path, tiny_llama):
    from privinf.emulator import capture_sites, emulate

    path = _profile().save(tmp_path / "p.json")
    ids = torch.randint(3, 99, (4, 64), generator=torch.Generator().manual_seed(0))
    clean = capture_sites(tiny_llama, ids, layers=[1])
    with emulate(tiny_llama, "noise", profile=path, layers=[1]) as h:
        noisy = capture_sites(tiny_llama, ids, layers=[1])
    assert h.noise[(1, "up")][0] == HEADLINE["up"] == "gaussian"
    err_up = (noisy[(1, "up")] - clean[(1, "up")]).numpy()
    assert err_up.std() == pytest.approx(0.03, rel=0.08)
    with pytest.raises(ValueError, match="profile"):
        with emulate(tiny_llama, "noise"):
            pass


@pytest.mark.parametrize("card", ["bolt", "puma", "smoothquant-a8", "teal-50"])
def test_emulator_exact_mode_matches_backend_error_distribution(tiny_llama, card):
    """The KS check of `privinf profile --check`, on a tiny model: backend vs emulator error."""
    from privinf.backends.base import get_backend
    from privinf.cards import protocol_card
    from privinf.emulator import calibrate_card
    from privinf.profile import backend_errors, emulator_errors

    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(3, 99, (1, 48), generator=gen) for _ in range(3)]
    layers, c = [0, 1], protocol_card(card)
    cal = calibrate_card(tiny_llama, c, batches, layers)
    errors, act_std = backend_errors(tiny_llama, batches, c, get_backend("plaintext"), layers, cal)
    emul = emulator_errors(tiny_llama, batches, c, layers, cal)
    for site in ("up", "down"):
        a = torch.cat([errors[(l, site)].flatten() for l in layers]).numpy()
        b = torch.cat([emul[(l, site)].flatten() for l in layers]).numpy()
        assert a.size == b.size
        assert ks_two_sample(a, b)["ks"] <= 0.05, site
        assert act_std[(0, site)] > 0


def test_cli_profile_help_and_unknown_backend():
    from click.testing import CliRunner

    from privinf.cli import main

    res = CliRunner().invoke(main, ["profile", "--help"])
    assert res.exit_code == 0 and "--check" in res.output
    res = CliRunner().invoke(main, ["profile", "--card", "bolt", "--backend", "nope"])
    assert res.exit_code != 0 and "unknown backend" in res.output


@pytest.mark.slow
def test_profile_on_the_default_model(tmp_path):
    from privinf.errormodel import default_path, format_profile
    from privinf.profile import measure_profile

    prof = measure_profile("bolt", layers=[0, 2], tokens=128, check=True, propagated=True)
    assert prof.tokens == 128 and prof.versions["torch"]
    whole = prof.propagated_profile()
    for site in ("up", "down"):
        assert prof.check[site]["ks"] <= 0.05
        assert 0 < prof.fit(site)["scale"] < 0.01
        # layer 2 carries layers 0-1's error too, so the all-layer error is the larger one
        assert whole.fit(site)["scale"] > prof.fit(site)["scale"]
    path = prof.save(default_path(prof, tmp_path))
    assert Profile.load(path) == prof
    assert "before W_up" in format_profile(prof)
    assert Profile.load(whole.save(default_path(whole, tmp_path))) == whole


def test_zero_error_site_fits_to_zero_scale():
    fit = fit_site(np.zeros(1000))
    assert fit["fits"]["gaussian"] == {"loc": 0.0, "scale": 0.0, "ks": None, "p": None}
    assert fit["zero_fraction"] == 1.0


def test_propagated_profile_is_its_own_noise_profile(tmp_path, tiny_llama):
    """`privinf profile --propagated` saves the all-layer error as a second profile: noise mode
    then samples that error's scale, and the file name says which one it is."""
    from privinf.emulator import capture_sites, emulate
    from privinf.errormodel import default_path
    from privinf.errors import UsageError

    block = _profile(up_std=0.01, down_b=0.005)
    rng = np.random.default_rng(1)
    block.per_layer = {"0": {s: {"std": 0.01, "mean_abs": 0.008, "act_std": 1.0} for s in ("up", "down")}}
    block.propagated = {"up": fit_site(rng.normal(0, 0.08, 50_000)), "down": fit_site(rng.laplace(0, 0.04, 50_000))}
    whole = block.propagated_profile()
    assert whole.scope == "propagated" and whole.propagated_profile() is whole
    assert whole.noise("up") == ("gaussian", pytest.approx(0.08, rel=0.03))
    assert whole.noise("down") == ("laplace", pytest.approx(0.04, rel=0.03))
    assert whole.per_layer == {"0": {"up": {"act_std": 1.0}, "down": {"act_std": 1.0}}}
    assert default_path(block, tmp_path).name == "bolt-plaintext-synthetic.json"
    path = whole.save(default_path(whole, tmp_path))
    assert path.name == "bolt-plaintext-synthetic-propagated.json" and Profile.load(path) == whole

    ids = torch.randint(3, 99, (4, 64), generator=torch.Generator().manual_seed(0))
    clean = capture_sites(tiny_llama, ids, layers=[1])
    with emulate(tiny_llama, "noise", profile=path, layers=[1]):
        noisy = capture_sites(tiny_llama, ids, layers=[1])
    assert (noisy[(1, "up")] - clean[(1, "up")]).std().item() == pytest.approx(0.08, rel=0.08)

    old = _profile()
    old.propagated = {s: {k: v for k, v in fit_site(rng.normal(0, 0.1, 1000)).items() if k != "quantiles"}
                      for s in ("up", "down")}  # written before the all-layer fit kept its quantiles
    for prof in (old, _profile()):
        with pytest.raises(UsageError, match="--propagated"):
            prof.propagated_profile()
