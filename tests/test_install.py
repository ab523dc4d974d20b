from __future__ import annotations

import numpy


def test_unbabel_comet_imports_beside_numpy_2() -> None:
    # unbabel-comet declares numpy<2; installed naively it would downgrade the
    # numpy that fairseq2n needs, and its torchmetrics needs pkg_resources.
    import comet

    assert numpy.__version__.startswith("2.")
    assert callable(comet.load_from_checkpoint)
