"""The fast rel-pos terms (``kernels.rel_pos_terms``, batched GEMMs on strided views) equal their NumPy
twin (two einsums).

Tolerance: both sum hd float32 products; the twin's einsum may order (and pair) the sum
differently, so they differ by a few ulps of the largest partial sum:
1e-6 x hd x max|q| x max|R| bounds that with room (float32 eps is 6e-8 per add).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from minisam.kernels import layers as K


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(1, 20), st.integers(1, 12),
       st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_rel_pos_terms(N, h, w, hd, kh, kw, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((N, h, w, hd)).astype(np.float32)
    Rh = rng.standard_normal((h, kh, hd)).astype(np.float32)
    Rw = rng.standard_normal((w, kw, hd)).astype(np.float32)
    ref_h, ref_w = K.rel_pos_terms_numpy(q, Rh, Rw)
    got_h, got_w = K.rel_pos_terms(q, Rh, Rw)
    for got, ref, R in ((got_h, ref_h, Rh), (got_w, ref_w, Rw)):
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * hd * np.abs(q).max() * np.abs(R).max())
