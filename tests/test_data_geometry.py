"""Geometry of umdbench.data: NIfTI round trips and labels put on an image's grid by affine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from umdbench.data.geometry import read_nifti, resample_nearest, save_nifti_atomic
from umdbench.volume import Volume


def _reference_nearest(labels, labels_affine, target_affine, shape):
    """Independent reference: per target voxel, world point -> nearest label voxel by hand."""
    ijk = np.indices(shape).reshape(3, -1).T.astype(float)
    world = ijk @ target_affine[:3, :3].T + target_affine[:3, 3]
    inv = np.linalg.inv(labels_affine)
    src = np.floor(world @ inv[:3, :3].T + inv[:3, 3] + 0.5).astype(int)
    inside = ((src >= 0) & (src < np.array(labels.shape))).all(axis=1)
    out = np.zeros(len(ijk), labels.dtype)
    out[inside] = labels[tuple(src[inside].T)]
    return out.reshape(shape)


def _affine(spacing, origin, perm=(0, 1, 2), flips=(1, 1, 1)):
    a = np.zeros((4, 4))
    for col, row in enumerate(perm):
        a[row, col] = spacing[col] * flips[col]
    a[:3, 3] = origin
    a[3, 3] = 1
    return a


affines = st.builds(
    _affine,
    st.tuples(*[st.floats(0.5, 4.0)] * 3),
    st.tuples(*[st.floats(-50, 50)] * 3),
    st.permutations([0, 1, 2]),
    st.tuples(*[st.sampled_from([-1, 1])] * 3),
)


@settings(max_examples=30, deadline=None)
@given(
    array=arrays(np.int16, st.tuples(*[st.integers(1, 6)] * 3)),
    affine=affines,
)
def test_nifti_round_trip_keeps_voxels_and_world_coordinates(tmp_path_factory, array, affine):
    path = tmp_path_factory.mktemp("rt") / "v.nii.gz"
    save_nifti_atomic(array, affine, path)
    back, back_affine = read_nifti(path)
    np.testing.assert_array_equal(back, array)
    np.testing.assert_allclose(back_affine, affine, atol=1e-4)
    corner = np.array([*(n - 1 for n in array.shape), 1.0])
    np.testing.assert_allclose(back_affine @ corner, affine @ corner, atol=1e-3)


@settings(max_examples=40, deadline=None)
@given(source=affines, target=affines, seed=st.integers(0, 2**16))
def test_axis_aligned_resampling_matches_hand_reference(source, target, seed):
    labels = np.random.default_rng(seed).integers(0, 4, (7, 6, 5)).astype(np.uint8)
    shape = (8, 5, 6)
    got = resample_nearest(labels, source, target, shape)
    np.testing.assert_array_equal(got, _reference_nearest(labels, source, target, shape))


def test_oblique_resampling_matches_hand_reference():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, (12, 10, 9)).astype(np.uint8)
    angle = np.deg2rad(17.0)
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    target = np.eye(4)
    target[:3, :3] = rot @ np.diag([1.3, 1.7, 2.1])
    target[:3, 3] = [3.3, -2.1, 1.05]
    source = _affine((2.0, 2.0, 2.5), (0.1, -8.2, -3.3))
    got = resample_nearest(labels, source, target, (10, 11, 9))
    np.testing.assert_array_equal(got, _reference_nearest(labels, source, target, (10, 11, 9)))


def test_same_world_in_two_orientations_gives_identical_labels():
    labels = np.random.default_rng(2).integers(0, 3, (6, 7, 8)).astype(np.uint8)
    ras = _affine((2, 2, 2), (0, 0, 0))
    # the same voxels stored LPS: flip the first two axes and move the origin accordingly
    lps_array = labels[::-1, ::-1, :]
    lps = _affine((2, 2, 2), (10, 12, 0), flips=(-1, -1, 1))
    assert Volume(lps_array, lps).orientation == "LPS"
    got = resample_nearest(lps_array, lps, ras, labels.shape)
    np.testing.assert_array_equal(got, labels)


def test_pet_on_coarser_grid_takes_the_nearest_ct_label():
    ct = _affine((1, 1, 1), (0, 0, 0))
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[4:8, 4:8, 4:8] = 3
    pet = _affine((4, 4, 4), (1.5, 1.5, 1.5))  # PET voxel centres at 1.5, 5.5, 9.5 mm
    got = resample_nearest(labels, ct, pet, (3, 3, 3))
    expected = np.zeros((3, 3, 3), np.uint8)
    expected[1, 1, 1] = 3  # 5.5 mm -> CT voxel 6 (inside), 1.5 -> 2 and 9.5 -> 10 (outside)
    np.testing.assert_array_equal(got, expected)


def test_read_nifti_refuses_4d(tmp_path: Path):
    save_nifti_atomic(np.zeros((3, 3, 3, 2), np.float32), np.eye(4), tmp_path / "x.nii.gz")
    with pytest.raises(ValueError, match="3D volume") as info:
        read_nifti(tmp_path / "x.nii.gz")
    assert info.value.code == "not_3d"  # type: ignore[attr-defined]
