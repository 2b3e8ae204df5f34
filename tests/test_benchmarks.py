"""The benchmarks that replay the workflow's scripts give them what the rules give them."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _paper_volume():
    spec = importlib.util.spec_from_file_location("paper_volume", ROOT / "benchmarks" / "paper_volume.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paper_volume_gives_each_replayed_script_every_input_and_param_it_reads(tmp_path):
    """Each script the benchmark replays reads ``snakemake.input.<name>``, ``.output.<name>``,
    ``.params.<name>`` and ``.wildcards.<name>``: every such name must be in the job the benchmark builds
    (a rule that gained an input or a param, and a benchmark that did not, fails here, not at bench time)."""
    pv = _paper_volume()
    args = argparse.Namespace(side=64, depth=16, seed=1, preset="default", model=str(tmp_path / "m.pt"),
                              volume_tta="config", tta_slices=1, threads=1, tile_px="config")
    plan = pv.Plan(tmp_path, args, pv.load_config())
    plan.info.write_text(json.dumps({"voxel_size_um": [0.5, 0.5, 0.5], "dense_slices": [0]}))
    checked = 0
    for step in pv.STEPS:
        jobs, _ = plan.jobs(step)
        for job in jobs:
            text = (ROOT / "workflow" / "scripts" / job["script"]).read_text()
            for kind, name in set(re.findall(r"snakemake\.(input|output|params|wildcards)\.(\w+)", text)):
                given = job.get(kind)
                assert isinstance(given, dict) and name in given, (step, job["script"], kind, name)
                checked += 1
    assert checked > 20


def _contact_budget():
    spec = importlib.util.spec_from_file_location("contact_budget", ROOT / "benchmarks" / "contact_budget.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_contact_budget_counts_the_faces_surface_contacts_counts():
    """On random labels and phases, the faces the budget takes (particle to planted void or CBD) are, per
    particle and class, the void and CBD face counts of :func:`detachment.surface.surface_contacts`, and the
    values it carries along are those of the face neighbour."""
    import numpy as np

    from detachment.phases import CBD, VOID
    from detachment.surface import surface_contacts

    cb = _contact_budget()
    rng = np.random.default_rng(7)
    labels = (rng.random((9, 10, 11)) < 0.4) * rng.integers(1, 4, (9, 10, 11))
    phases = rng.integers(0, 5, labels.shape).astype(np.uint8)
    marker = rng.random(labels.shape)
    owner, planted, (value,) = cb.face_layer(labels, phases, [marker])
    counts = surface_contacts(labels, phases).n_faces
    for cls, phase in ((0, VOID), (1, CBD)):
        got = np.bincount(owner[planted == phase], minlength=counts.shape[0])
        np.testing.assert_array_equal(got, counts[:, cls])
    expected = []  # brute force: the marker of every background void / CBD voxel across a particle's face
    for z, y, x in np.ndindex(labels.shape):
        for dz, dy, dx in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
            u = (z + dz, y + dy, x + dx)
            if labels[z, y, x] and all(0 <= a < n for a, n in zip(u, labels.shape)) and labels[u] == 0 \
                    and phases[u] in (VOID, CBD):
                expected.append(marker[u])
    np.testing.assert_allclose(np.sort(value), np.sort(expected))


def test_contact_budget_recovers_each_owners_mixture_weight():
    """Fixed components, per-owner weights drawn at 0.1, 0.5 and 0.8: the EM weight of each owner is the
    planted one within three binomial standard errors."""
    import numpy as np
    from scipy.stats import norm

    cb = _contact_budget()
    rng = np.random.default_rng(1)
    weights = np.array([0.0, 0.1, 0.5, 0.8])
    n_each = 4000
    owner = np.repeat(np.arange(1, 4), n_each)
    is_void = rng.random(owner.size) < weights[owner]
    x = np.where(is_void, rng.normal(0.2, 0.08, owner.size), rng.normal(0.45, 0.07, owner.size))
    est = cb.per_particle_weight(owner, norm.pdf(x, 0.2, 0.08), norm.pdf(x, 0.45, 0.07), 4)
    se = np.sqrt(weights[1:] * (1 - weights[1:]) / n_each)
    assert np.all(np.abs(est[1:] - weights[1:]) < 3 * se + 0.01)


def test_random_phantom_draws_are_valid_phantoms_with_the_order_and_noise_they_claim():
    """Every draw of ``benchmarks/random_phantoms.py`` is a phantom the generator accepts (no refused tilt or
    depth), its five grey levels lie in the configured order and NMC and CBD are never narrower than the
    noise shared by electrolyte and Al."""
    from detachment.phantom import PhantomParams

    spec = importlib.util.spec_from_file_location("random_phantoms", ROOT / "benchmarks" / "random_phantoms.py")
    rp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rp)
    import numpy as np

    factors, halos = [], []
    for seed in range(300):
        p = rp.draw(np.random.default_rng(seed))
        PhantomParams(**p).validate(f"draw {seed}")
        factors.append(p["blur_z_factor"])
        halos.append((p["halo_amplitude"], p.get("halo_sigma_vox", 0.0), p.get("halo_shape", "")))
        levels = [p["intensity"][n] for n in ("void", "cbd", "al", "nmc_low", "nmc_high")]
        assert levels == sorted(levels), (seed, levels)
        noise = p["fwhm"]["void"]
        assert p["fwhm"]["al"] == noise and min(p["fwhm"][n] for n in ("cbd", "nmc_low", "nmc_high")) >= noise
        assert 0.0 <= p["blur_sigma_vox"] <= 0.6 and p["supersample"] in (1, 2)
    # isotropic in about half the draws, else 0.7-1.4 times as wide along z, on both sides of 1
    factors = np.array(factors)
    iso = factors == 1.0
    assert 0.4 < iso.mean() < 0.6
    assert factors[~iso].min() >= 0.7 and factors[~iso].max() <= 1.4
    assert (factors[~iso] < 0.93).sum() > 20 and (factors[~iso] > 1.12).sum() > 20
    # a halo in about half the draws, of both shapes, from below the removal's trigger to twice the preset's
    amplitude = np.array([a for a, _, _ in halos])
    assert 0.4 < (amplitude > 0).mean() < 0.6
    assert amplitude[amplitude > 0].min() >= 0.1 and amplitude.max() <= 1.0 and (amplitude > 0.75).sum() > 20
    assert {shape for a, _, shape in halos if a > 0} == {"gaussian", "paganin"}
    assert all(1.0 <= reach <= 3.0 for a, reach, _ in halos if a > 0)
    # the factor and the halo are drawn from child generators: whatever they draw, the parent's stream, and
    # the factor drawn before the halo was added, go on as without them
    rng, plain = np.random.default_rng(7), np.random.default_rng(7)
    drawn = rp.draw(rng)
    real = rp.z_factor, rp.halo
    rp.z_factor, rp.halo = (lambda child: 1.0), (lambda child: {})
    try:
        without = rp.draw(plain)
    finally:
        rp.z_factor, rp.halo = real
    added = {"blur_z_factor", "halo_amplitude", "halo_sigma_vox", "halo_shape"}
    assert {k: v for k, v in drawn.items() if k not in added} == {k: v for k, v in without.items() if k not in added}
    assert rng.uniform() == plain.uniform()
    rp.halo = lambda child: {}
    try:
        assert rp.draw(np.random.default_rng(7))["blur_z_factor"] == drawn["blur_z_factor"]
    finally:
        rp.halo = real[1]


def _random_contacts():
    """``benchmarks/random_contacts.py`` and the ``random_phantoms`` module it imports, loaded as modules."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("random_contacts", ROOT / "benchmarks" / "random_contacts.py")
        rc = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(rc)
        import random_phantoms
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return rc, random_phantoms


def test_random_contact_draws_are_the_phase_draws_with_a_planted_detachment_added():
    """``benchmarks/random_contacts.py`` draws, per seed, the phantom ``random_phantoms.py`` draws (same grey
    levels and geometry) with a planted mean detachment and gap share added, and the generator accepts it;
    its reading settings are the default config's, completed by the schema (every key it reads present)."""
    import numpy as np

    from detachment.phantom import PhantomParams

    rc, rp = _random_contacts()
    for seed in range(100):
        p, q = rc.draw_with_contacts(np.random.default_rng(seed)), rp.draw(np.random.default_rng(seed))
        assert {k: v for k, v in p.items() if k not in ("detachment_mean", "contact_gap_probability")} == q
        assert 0.1 <= p["detachment_mean"] <= 0.6 and 0.0 <= p["contact_gap_probability"] <= 0.6
        PhantomParams(**p).validate(f"draw {seed}")
        thin = rc.draw_with_contacts(np.random.default_rng(seed), thin=True)
        assert {k: v for k, v in thin.items() if k not in ("gap_width_vox", "coating_width_vox")} == \
            {k: v for k, v in p.items() if k not in ("gap_width_vox", "coating_width_vox")}
        assert 1 <= thin["gap_width_vox"] <= 2 and 1 <= thin["coating_width_vox"] <= 1.5
        PhantomParams(**thin).validate(f"thin draw {seed}")
    sc = rc.science_settings()
    for key in ("contact_gap_from_intensity", "contact_max_spread", "contact_sharpen", "contact_spill",
                "contact_partial_volume", "contact_max_ambiguity", "contact_probe_vox", "contact_level"):
        assert key in sc, key
    assert sc["contact_level"] in ("fit", "midpoint") and sc["contact_probe_vox"] >= 1


def test_random_contacts_prior_sensitivity_reads_the_same_draw_again_with_the_weak_prior(tmp_path, monkeypatch):
    """``--prior-sensitivity BETA``: each draw is read a second time with ``psf_refine_beta`` set to BETA and the
    other threshold overrides kept, and ``prior_shift`` is the second reading's bias less the first's."""
    rc, _ = _random_contacts()
    calls = []

    def fake_read(ph, volume, truth, phases_path, level_path, qc, sc, threshold, refine, self_check=False):
        calls.append(dict(threshold or {}))
        beta = (threshold or {}).get("psf_refine_beta", 3.0)
        return {"detachment_bias": 0.01 * beta, "detachment_mae": 0.02}

    monkeypatch.setattr(rc, "generate_phantom", lambda params, seed: None)
    monkeypatch.setattr(rc, "write_phantom", lambda *a: None)
    monkeypatch.setattr(rc, "read_sample", fake_read)
    row = rc.measure(7, tmp_path, {}, {"psf_refine_sweeps": 2}, True, weak_beta=0.5)
    assert calls == [{"psf_refine_sweeps": 2}, {"psf_refine_sweeps": 2, "psf_refine_beta": 0.5}]
    assert row["bias_weak_prior"] == 0.005 and abs(row["prior_shift"] - (0.005 - 0.03)) < 1e-12
    calls.clear()
    assert "prior_shift" not in rc.measure(7, tmp_path, {}, None, True) and len(calls) == 1


def test_random_contacts_summary_counts_what_each_warning_flags_among_the_silent_draws(capsys):
    """Six draws written out: one stopped, one ambiguous, four that go on (two silent). The weak-separation
    warning flags one silent and one good draw, the self-consistency stop the other silent one: the two together
    catch both. The wide-edge warning flags one good draw (a table without its column: none)."""
    import pandas as pd

    rc, _ = _random_contacts()
    table = pd.DataFrame({
        "detachment_mae": [0.2, 0.1, 0.05, 0.04, 0.01, 0.01],
        "detachment_bias": [0.2, 0.1, 0.05, 0.04, 0.0, 0.005],
        "failed": ["blur_sigma_vox", "", "", "", "", ""],
        "ambiguous": [False, True, False, False, False, False],
        "silent": [False, False, True, True, False, False],
        "covered": [False, False, True, False, False, False],
        "separation_weak": [False, False, True, False, True, False],
        "self_consistent": [True, True, True, False, True, True],
        "self_shift": [0.0, 0.0, 0.002, 0.02, 0.001, 0.0],
        "edges_wide": [True, False, False, False, False, True]})
    rc.summarise(table, None, True)
    out = capsys.readouterr().out
    assert "(edge width above 0.7 vox): flags 0 of the 2 silent draws and 1 of the other 2" in out
    assert "not ambiguous on 4;" in out and "nothing stops): 2," in out
    assert "weak separation warning (D 2.0-3.0): flags 1 of the 2 silent draws and 1 of the other 2" in out
    assert "stops there by default): stops 1 of the 2 silent draws and 0 of the other 2" in out
    assert "self-consistency or a warning: flags 2 of the 2 silent draws and 2 of the other 2" in out
    rc.summarise(table.drop(columns="edges_wide"), None, True)
    assert "flags 0 of the 2 silent draws and 0 of the other 2" in capsys.readouterr().out
