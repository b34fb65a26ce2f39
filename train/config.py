"""Training configuration: one dataclass, and the named recipes that fill it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class TrainConfig:
    protocol: str = "cave"
    arch: str = "ssran"  # or ssran_linear_skip, ssran_rootpoly_skip
    recipe: str = "paper"
    # The paper's hyper-parameters (SSRAN.py): 4x4 patches at stride 1, batch 100, lr 0.01 x0.1 every
    # 50 epochs, L2 loss, 200 epochs. The optimizer is not published; see README for why Adam.
    epochs: int = 200
    batch_size: int = 100
    lr: float = 0.01
    schedule: str = "step"  # step (x lr_gamma every lr_step epochs) or cosine
    lr_step: int = 50
    lr_gamma: float = 0.1
    optimizer: str = "adam"
    weight_decay: float = 0.0  # decoupled (AdamW) when > 0
    loss: str = "l2"  # l2 (the paper), l1, or mrae (relative error, guarded near zero)
    # > 0: plus this weight x the same loss on the spectra seen through the camera (D . pred vs D . hsi):
    # the colour error, which JPEG's 4:2:0 chroma concentrates in (simulated protocols only)
    camera_loss: float = 0.0
    patch_size: int = 4
    patches_per_epoch: int = 0  # 0 = every stride-1 patch each epoch
    augment: bool = False  # flips and 90-degree rotations
    # Photometric augmentation, per patch. Exposure: MSI and HSI scaled together by a factor drawn
    # log-uniformly from [lo, hi] (the camera model is linear). Sensor noise on the MSI only
    # (Poisson-Gaussian): variance (u * noise_read)^2 + v * noise_shot * msi, u, v ~ U(0, 1) per patch.
    exposure: list[float] = field(default_factory=list)
    noise_read: float = 0.0
    noise_shot: float = 0.0
    noise_clean_share: float = 0.0  # share of the patches left without noise
    # The capture chain of a photo (protocols of the srgb camera): after exposure and noise each patch is
    # clipped, sRGB-encoded to 8 bits, a `jpeg_share` of them written as JPEG at a quality drawn from
    # jpeg_quality [lo, hi] (4:2:0), the rest as PNG, read back and decoded to linear (conditions.photo).
    encode: str = ""  # "" (linear frames) or "srgb"
    jpeg_quality: list[int] = field(default_factory=list)
    jpeg_share: float = 0.0
    # Spectral augmentation: each patch's spectra times a smooth curve exp(a x + b (x^2 - 1/3)),
    # a, b ~ U(-illuminant, illuminant), the MSI re-simulated (simulated protocols only).
    illuminant: float = 0.0
    mixup: float = 0.0  # share of patches blended with another of the batch (MSI and HSI alike)
    ema: float = 0.0  # decay of an exponential moving average of the weights (0 = off); validation,
    #                   the best weights and the report use the average
    train_skip: bool = True  # skip variants: train the skip's weights too (False: keep the least-squares fit)
    train_resolution: str = "native"  # cave: native (512 and 256 scenes) or binned (all at 256 scale)
    select_mode: str = "patch"  # inference mode the best-on-validation checkpoint is chosen in
    # > 0: validation is also scored with read noise of this sigma on the MSI (ssran_edge.conditions),
    # and the epoch is chosen on the mean of the clean and the noisy PSNR
    select_noise: float = 0.0
    # Or: the epoch is chosen on the mean validation PSNR under these capture conditions (by name,
    # ssran_edge.conditions), val_psnr being the first's
    select_conditions: list[str] = field(default_factory=list)
    # Skip variants: the least-squares skip is fitted on training pixels with read noise of this sigma
    # (a fit on clean pixels has large, cancelling coefficients that amplify noise), with a ridge
    # (relative to the Gram matrix's mean diagonal). With --init of the same arch the skip is kept
    # unless refit_skip; an --init of another arch gives the body only, and the skip is fitted.
    skip_noise: float = 0.0
    skip_ridge: float = 0.0
    skip_condition: str = ""  # or: fitted on training pixels under this capture condition (a photo's chain)
    refit_skip: bool = False
    # Once a recipe is chosen on validation: train on train + validation scenes and keep the last
    # epoch (validation is then seen data: its figure measures fit, and chooses nothing).
    fold_validation: bool = False
    tile: int = 256
    width: int = 64
    num_blocks: int = 3
    eca_kernel: int = 5
    init: str = ""  # start from these weights (fine-tuning), with a fresh optimizer
    # Quantization-aware fine-tuning of --init weights: train through the INT8 export's rounding
    # (train/qat.py); one process.
    qat: bool = False
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # 0 = torch's default
    output: str = ""
    data_root: str = ""
    # protocol "files": your own hyperspectral cubes seen through an SRF
    train_files: list[str] = field(default_factory=list)
    test_files: list[str] = field(default_factory=list)
    srf: str = ""
    variable: str = ""

    def data_kwargs(self) -> dict:
        return {"train_files": self.train_files, "test_files": self.test_files, "srf": self.srf,
                "variable": self.variable or None, "train_resolution": self.train_resolution,
                "fold_validation": self.fold_validation}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


# Recipes fill fields before command-line flags override them.
# - paper: the authors' settings (4x4 patches; on CAVE every stride-1 patch is ~1.2 M patches an
#   epoch, too many for a CPU, so an epoch there samples 50,000).
# - edge: what the shipped weights were trained with, chosen so that tile inference (the runtime's
#   default) is the better mode: large patches (ECA sees tile-like extents), flips/rotations,
#   Adam 1e-3 with a cosine schedule. Per protocol, the budget fits ~1 h of a 2-core CPU or less.
RECIPES: dict[str, dict[str, dict]] = {
    "paper": {
        "*": dict(epochs=200, batch_size=100, lr=0.01, schedule="step", lr_step=50, lr_gamma=0.1,
                  patch_size=4, augment=False, select_mode="patch"),
        "cave": dict(patches_per_epoch=50_000),
    },
    "edge": {
        "*": dict(lr=1e-3, schedule="cosine", augment=True, select_mode="tile"),
        # Paris is a real ALI/Hyperion pair whose bands are offset by a fraction of a pixel in a fixed
        # direction: flips/rotations would scramble that offset, which SSRAN's 3x3 convs can learn.
        "paris": dict(epochs=100, batch_size=16, patch_size=24, patches_per_epoch=320, augment=False),
        "pavia": dict(epochs=100, batch_size=16, patch_size=16, patches_per_epoch=320),
        # CAVE (27 scenes): 64x64 patches from both resolutions, exposure x0.25-2 (the camera model is
        # linear), L1, an EMA of the weights, a frozen least-squares skip fitted on noisy pixels, sensor
        # noise (read 0-2 %, shot), the epoch chosen on clean and noisy validation. docs/fidelity.md.
        "cave": dict(epochs=100, batch_size=8, patch_size=64, patches_per_epoch=800, loss="l1",
                     exposure=[0.25, 2.0], ema=0.999, train_skip=False, noise_read=0.02, noise_shot=0.0005,
                     select_noise=0.01, skip_noise=0.01),
        # The sRGB camera (photos, video): CAVE's recipe with the capture chain in the loop -- exposure
        # 0.6-1.1 of full scale, the same sensor noise (half the patches clean), clipping, 8-bit sRGB, read
        # back by the photo decoder; SSRAN + a linear skip fitted on noisy 8-bit frames; the epoch chosen on
        # 8-bit PNG with and without read noise. JPEG in the loop (--jpeg-share, quality 60-95) was measured
        # and left out: it cost lossless and noisy accuracy and gained nothing on JPEGs (docs/photos.md).
        "cave_srgb": dict(arch="ssran_linear_skip", epochs=24, batch_size=8, patch_size=64, patches_per_epoch=800,
                          loss="l1", exposure=[0.6, 1.1], ema=0.999, train_skip=False, noise_read=0.02,
                          noise_shot=0.0005, noise_clean_share=0.5, encode="srgb", jpeg_quality=[60, 95],
                          jpeg_share=0.0, select_conditions=["sRGB 8-bit PNG", "read 1% + sRGB 8-bit PNG"],
                          skip_condition="read 1% + sRGB 8-bit PNG"),
    },
}


def _check_capture(values: dict) -> None:
    """The capture settings are names and ranges a run would otherwise fail on an hour in."""
    from ssran_edge.conditions import condition_named

    quality = values.get("jpeg_quality") or []
    if quality and not (len(quality) == 2 and 1 <= quality[0] <= quality[1] <= 100):
        raise ValueError(f"--jpeg-quality {' '.join(map(str, quality))}: needs LO <= HI within 1-100")
    if values.get("jpeg_share") and not quality:
        raise ValueError("--jpeg-share needs --jpeg-quality LO HI")
    if (quality or values.get("jpeg_share")) and not values.get("encode"):
        raise ValueError("--jpeg-quality and --jpeg-share are steps of the capture chain: give --encode srgb")
    for name in [*values.get("select_conditions", []), *([values["skip_condition"]] if values.get("skip_condition")
                                                         else [])]:
        condition_named(name)


def make_config(protocol: str = "cave", recipe: str = "paper", **overrides) -> TrainConfig:
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    values = {**RECIPES[recipe]["*"], **RECIPES[recipe].get(protocol, {})}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("qat") and not values.get("init"):
        raise ValueError("--qat fine-tunes trained weights for the INT8 export: give them with --init")
    unknown = set(values) - TrainConfig.field_names()
    if unknown:
        raise ValueError(f"unknown training settings: {sorted(unknown)}")
    _check_capture(values)
    return TrainConfig(protocol=protocol, recipe=recipe, **values)
