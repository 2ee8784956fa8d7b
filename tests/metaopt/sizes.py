"""Small sizes shared by the tests that run ``metaopt train`` (a few meta-steps on a 4-d quadratic)."""

TINY_TRAIN = [
    "steps=10",
    "truncation=5",
    "meta_batch=2",
    "val_every=2",
    "val_seeds=2",
    "tune_seeds=1",
    "lr_grid=[0.01,0.1]",
    "tasks=[{name: quadratic, options: {dim: 4}}]",
    "device=cpu",
]
