"""Named phantom presets: a family spanning what cycled NMC tomograms show.

Each preset in :data:`PRESETS` overrides some :class:`detachment.phantom.PhantomParams` on top of the
configured phantom defaults (``default`` overrides nothing); :func:`preset_params` applies one.
Together they span two grey-level contrasts (phase means), NMC FWHM 0.07-0.147, noise σ 0.023-0.045, electrolyte 30-80 % of the volume (with empty space above the
electrode), particle diameters 12-40 voxels, 15-90 % of placements touching, detachment gaps 1-4
voxels, CBD coats 0-2 voxels (bare porous-CBD contacts as well as coated ones), cracks 1-3 voxels,
blur σ 0.3-1.5 voxel (up to twice as wide along z), ring artefacts and collectors 3-12 voxels thick, flat or tilted 2°, surfaces on the voxel faces or cutting voxels
anywhere (partial volume). Most presets change one property so a failure can be traced to it;
``paper_like`` combines several.
"""

from __future__ import annotations

from copy import deepcopy

#: Grey-level FWHMs of the paper's Supp. Fig. 8 (Al 0.053, CBD 0.064, NMC 0.147).
PAPER_FWHM = {"void": 0.053, "cbd": 0.064, "al": 0.053, "nmc_low": 0.147, "nmc_high": 0.147}

#: One-voxel gaps, coats and cracks, half the touching pairs split by a gap (``thin_gaps`` and its variants).
THIN_GAPS = {"gap_width_vox": 1.0, "coating_width_vox": 1.0, "crack_width_vox": 1.0, "contact_gap_probability": 0.5}

PRESETS: dict[str, dict] = {
    # the configured defaults: 18-voxel particles, 85 % placed touching, 2-voxel gaps, coats and cracks
    "default": {},
    # the paper's NMC grey-level width: low- and high-density NMC overlap
    "broad_nmc": {"fwhm": PAPER_FWHM},
    # few, mostly free particles under much electrolyte (tall volume, low CBD)
    "sparse": {"shape_zyx": [80, 192, 192], "n_particles": 25, "contact_fraction": 0.05,
               "cbd_height_fraction": 0.5, "collector_thickness_vox": 6},
    # a wide point-spread function: gaps and cracks blurred into their neighbours
    "blurry": {"blur_sigma_vox": 1.5, "drift_amplitude": 0.03},
    # one-voxel gaps, coats and cracks
    "thin_gaps": THIN_GAPS,
    # 36-voxel particles (finer voxels), wide gaps and cracks, a thick collector
    "large_particles": {"shape_zyx": [64, 192, 192], "voxel_size_um": 0.25, "n_particles": 30,
                        "diameter_min_um": 6.0, "diameter_max_um": 11.0, "collector_thickness_vox": 8,
                        "gap_width_vox": 3.0, "crack_width_vox": 3.0},
    # 12-voxel particles, crowded, CBD up to their tops: little electrolyte
    "small_particles": {"shape_zyx": [28, 192, 192], "n_particles": 200, "diameter_median_um": 7.0,
                        "diameter_min_um": 5.0, "diameter_max_um": 9.0, "contact_fraction": 0.9,
                        "cbd_height_fraction": 1.3, "collector_thickness_vox": 3, "gap_width_vox": 1.5,
                        "coating_width_vox": 1.0, "crack_width_vox": 1.0},
    # half the particles touch porous CBD bare (no coat), 4-voxel gaps, a 12-voxel collector
    "bare_contacts": {"shape_zyx": [48, 192, 192], "coating_probability": 0.5, "coating_width_vox": 1.0,
                      "gap_width_vox": 4.0, "collector_thickness_vox": 12, "cbd_porosity": 0.45},
    # other grey levels: CBD close to the electrolyte, Al close to NMC, NMC low and high density 0.08 apart
    # at the paper's FWHM (one histogram mode): the pipeline must not rely on the default contrast
    "low_contrast": {"shape_zyx": [48, 192, 192], "fwhm": PAPER_FWHM,
                     "intensity": {"void": 0.05, "cbd": 0.17, "al": 0.62, "nmc_low": 0.76, "nmc_high": 0.84}},
    # several at once, after what the paper's tomograms show: NMC FWHM 0.147, ~30-voxel particles, much
    # electrolyte above the electrode, few touching, thin mixed coats, blur
    "paper_like": {"shape_zyx": [96, 192, 192], "voxel_size_um": 0.3, "n_particles": 30,
                   "diameter_min_um": 6.0, "diameter_max_um": 12.0, "contact_fraction": 0.15,
                   "collector_thickness_vox": 8, "gap_width_vox": 2.5, "coating_width_vox": 1.5,
                   "coating_probability": 0.7, "crack_width_vox": 1.5, "blur_sigma_vox": 1.0,
                   "cbd_height_fraction": 0.6, "fwhm": PAPER_FWHM},
    # the default geometry drawn on 2 x 2 x 2 sub-voxels: surfaces cut the voxels anywhere, and a voxel
    # beside a particle holds part of it (partial volume), as in every real reconstruction
    "partial_volume": {"supersample": 2},
    # twice the default noise on every phase (a shorter exposure or fewer projections)
    "noisy": {"fwhm": {"void": 0.106, "cbd": 0.128, "al": 0.106, "nmc_low": 0.14, "nmc_high": 0.14}},
    # partial volume under a sharper point-spread function: only the contact reading's own checks can tell
    # that the voxels across the faces are mixtures
    "partial_volume_sharp": {"supersample": 2, "blur_sigma_vox": 0.3},
    # one-voxel gaps, coats and cracks under the paper's NMC width: NMC's texture as wide as real NMC's beside
    # coats the forward model's prior can merge into the particle
    "thin_gaps_broad_nmc": {**THIN_GAPS, "fwhm": PAPER_FWHM},
    # one-voxel gaps, coats and cracks under a point spread a little wider than the default's (σ 0.6 against 0.5):
    # the blur check, whose bound was set on gaps and coats of two voxels, passes, and a one-voxel coat blurs
    # towards a gap's grey level
    "thin_gaps_blurred": {**THIN_GAPS, "blur_sigma_vox": 0.6},
    # a sample mounted 2 degrees off square: the collector's top rises 9 voxels across the volume, so no
    # slice is its top; on a thicker collector under a deeper volume
    "tilted_collector": {"shape_zyx": [48, 192, 192], "collector_thickness_vox": 8, "collector_tilt_deg": 2.0,
                         "collector_tilt_azimuth_deg": 30.0},
    # one-voxel gaps and coats under grey levels that wander across the volume by 0.25 (cupping, drift): with
    # one threshold per phase for the whole volume the bright parts read gaps as attached
    "shaded": {**THIN_GAPS, "drift_amplitude": 0.25},
    # the default geometry under grey levels that wander by 0.6, twice the step from the electrolyte to CBD: the
    # phase model does not fit the volume as it is, or the map flattened by its first map's levels fails its
    # checks, and the shading is first estimated from the grey levels alone
    "strongly_shaded": {"drift_amplitude": 0.6},
    # phase-contrast edge enhancement, as a propagation-based (holotomographic) reconstruction leaves where one
    # δ/β ratio is assumed for phases that differ in it: a dark rim in the electrolyte and CBD beside every
    # particle, a bright one inside it, over a few voxels
    "halo": {"halo_amplitude": 0.5},
    # the same halo twice as strong: the map's edges move (phase accuracy below 0.97)
    "halo_strong": {"halo_amplitude": 1.0},
    # one-voxel gaps and coats under the halo, and under half of it: the first reads coats as gaps, the second
    # still reads within the goals (tuning presets: between them lies the edge-halo check's bound)
    "thin_gaps_halo": {**THIN_GAPS, "halo_amplitude": 0.5},
    "thin_gaps_halo_mild": {**THIN_GAPS, "halo_amplitude": 0.25},
    # a halo of another shape than the one the workflow takes out (a Gaussian unsharp mask): a Paganin
    # retrieval's residual, whose kernel exp(-r / l) / r reaches much further, over one-voxel gaps and coats
    "thin_gaps_halo_paganin": {**THIN_GAPS, "halo_amplitude": 0.5, "halo_shape": "paganin", "halo_sigma_vox": 1.5},
    # a point spread twice as wide along z as within the slices (σ 1.0 against 0.5: a vertical drift during the
    # scan, slices interpolated or binned): the blur check reads the slices and passes, the contacts under and
    # over the particles are blurred as `paper_like`'s
    "coarse_z": {"blur_z_factor": 2.0},
    # tuning presets between which the z-blur check's bound lies: the default geometry under 1.3 times the blur
    # along z, one-voxel gaps and coats under 1.3 and 1.15 times
    "coarse_z_mild": {"blur_z_factor": 1.3},
    "thin_gaps_coarse_z": {**THIN_GAPS, "blur_z_factor": 1.3},
    "thin_gaps_coarse_z_mild": {**THIN_GAPS, "blur_z_factor": 1.15},
    # a point spread half as wide along z as within the slices (σ 0.25 against 0.5: slices blurred or binned in
    # plane, a volume resampled from a coarser in-plane grid): the forward model, which takes the spread read
    # within the slices as isotropic, blurs the contacts under and over the particles more than the data are
    "sharp_z": {"blur_z_factor": 0.5},
    # tuning presets between which the lower bound of the z-blur check lies: one-voxel gaps and coats under 0.7
    # and 0.8 times the blur along z
    "thin_gaps_sharp_z": {**THIN_GAPS, "blur_z_factor": 0.7},
    "thin_gaps_sharp_z_mild": {**THIN_GAPS, "blur_z_factor": 0.8},
    # ring artefacts left in by the reconstruction: 16 rings about the rotation axis (z through the slices'
    # centre), each up to 0.08 (a quarter of the electrolyte-CBD step), 1.5 voxels wide, in every slice
    "rings": {"ring_amplitude": 0.08},
    # tuning presets between which the ring check's bound lies: rings half as strong again and twice as strong
    "rings_medium": {"ring_amplitude": 0.12},
    "rings_strong": {"ring_amplitude": 0.16},
}


def preset_params(base: dict, preset: str, extra_presets: dict | None = None, where: str = "phantom") -> dict:
    """Phantom parameters: ``base`` (the configured defaults) overlaid with the named preset.

    Parameters
    ----------
    base : dict
        The configured phantom parameters (``phantom.defaults``; :class:`detachment.phantom.PhantomParams`
        fields).
    preset : str
        A name in :data:`PRESETS` or in ``extra_presets``.
    extra_presets : dict of str to dict, optional
        User presets (``phantom.presets`` in the config); a name here replaces a built-in one.
    where : str, default "phantom"
        What to name in an error message.

    Returns
    -------
    dict
        A new mapping (deep copies); ``base`` is left unchanged.

    Raises
    ------
    ValueError
        When the preset is unknown.
    """
    known = {**PRESETS, **(extra_presets or {})}
    if preset not in known:
        raise ValueError(f"{where}: unknown phantom preset {preset!r}; known: {sorted(known)}")
    out = deepcopy(dict(base))
    out.update(deepcopy(known[preset]))
    return out
