"""medvq.handlers.monitoring on volumes: orthogonal middle slices in the grid, and MONAI's slice animation written to a
real TensorBoard event file (read back with TensorBoard's EventAccumulator and PIL)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from medvq.handlers import ReconstructionGridHandler, make_grid
from medvq.handlers.monitoring import orthogonal_views, volume_pair

X, Y, Z = 6, 8, 10  # distinct sizes: a swapped axis changes a shape
S = max(X, Y, Z)


def _volume(seed: int, batch: int = 2, channels: int = 1) -> torch.Tensor:
    """(B, C, X, Y, Z) values on the uint8 grid of [-1, 1] (exact after (x + 1) * 127.5), never -1 (the padding)."""
    levels = torch.randint(1, 256, (batch, channels, X, Y, Z), generator=torch.Generator().manual_seed(seed))
    return levels.float() / 127.5 - 1.0


def _uint8(x: np.ndarray) -> np.ndarray:
    return np.round((x + 1) * 127.5).astype(np.uint8)


def _square(plane: np.ndarray) -> np.ndarray:
    """(H, W) -> (S, S), centred, padded with 0 (uint8 of -1)."""
    out = np.zeros((S, S), np.uint8)
    top, left = (S - plane.shape[0]) // 2, (S - plane.shape[1]) // 2
    out[top : top + plane.shape[0], left : left + plane.shape[1]] = plane
    return out


def test_volume_rows_show_axial_coronal_sagittal_of_input_then_reconstruction():
    images, recons = _volume(0), _volume(1)
    grid = make_grid(images, recons)
    assert grid.shape == (2 * S, 6 * S, 3) and grid.dtype == np.uint8
    assert (grid[..., 0] == grid[..., 1]).all() and (grid[..., 0] == grid[..., 2]).all()  # gray as RGB
    for row, (image, recon) in enumerate(zip(images.numpy(), recons.numpy())):
        tiles = []
        for volume in (image[0], recon[0]):  # (X, Y, Z)
            axial, coronal, sagittal = volume[:, :, Z // 2], volume[:, Y // 2, :], volume[X // 2]
            # turned a quarter counter-clockwise: the plane's second axis runs upwards (numpy, not torch)
            tiles += [_square(_uint8(np.rot90(p))) for p in (axial, coronal, sagittal)]
        assert np.array_equal(grid[row * S : (row + 1) * S, :, 0], np.concatenate(tiles, axis=1))


def test_orthogonal_views_put_anterior_and_superior_up_for_a_ras_volume():
    volume = -torch.ones(1, X, Y, Z)
    volume[0, X - 1, Y - 1, Z // 2] = 1.0  # right, anterior, in the middle axial plane
    volume[0, X // 2, Y // 2, Z - 1] = 1.0  # superior end, in the middle coronal and sagittal planes
    views = orthogonal_views(volume)[0]  # (S, 3S)
    assert views.shape == (S, 3 * S)
    axial, coronal, sagittal = views[:, :S], views[:, S : 2 * S], views[:, 2 * S :]
    # axial: Y rows (anterior up) x X columns (patient right on the right), centred on the square
    top, left = (S - Y) // 2, (S - X) // 2
    assert torch.nonzero(axial == 1).tolist() == [[top, left + X - 1]]
    # coronal / sagittal: superior in the top row of their content
    top_z = (S - Z) // 2
    assert torch.nonzero(coronal == 1).tolist() == [[top_z, (S - X) // 2 + X // 2]]
    assert torch.nonzero(sagittal == 1).tolist() == [[top_z, (S - Y) // 2 + Y // 2]]
    with pytest.raises(ValueError, match=r"volume must be \(C, X, Y, Z\)"):
        orthogonal_views(torch.zeros(1, 4, 4))


def test_make_grid_keeps_2d_and_rejects_other_ranks():
    images, recons = _volume(2)[..., 0], _volume(3)[..., 0]  # (2, 1, X, Y)
    grid = make_grid(images, recons)
    expected = np.concatenate([np.concatenate([_uint8(i[0]), _uint8(r[0])], axis=1)
                               for i, r in zip(images.numpy(), recons.numpy())], axis=0)
    assert grid.shape == (2 * X, 2 * Y, 3) and np.array_equal(grid[..., 0], expected)
    with pytest.raises(ValueError, match=r"images must be \(B, C, H, W\) or \(B, C, X, Y, Z\)"):
        make_grid(torch.zeros(2, 1, 4), torch.zeros(2, 1, 4))


def _accumulator(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    acc.Reload()
    return acc


def _evaluate(batches: list[dict], handler: ReconstructionGridHandler, epochs: int = 1) -> Engine:
    engine = Engine(lambda engine, batch: batch)  # the batch is the output: {"image", "pred"}
    handler.attach(engine)
    engine.run(batches, max_epochs=epochs)
    return engine


def test_grid_handler_writes_the_grid_and_a_slice_animation_of_the_first_volume(tmp_path):
    first = {"image": _volume(4), "pred": _volume(5)}
    second = {"image": _volume(6), "pred": _volume(7)}  # not captured: the first batch of an epoch is drawn
    with SummaryWriter(log_dir=str(tmp_path / "tb")) as writer:
        handler = ReconstructionGridHandler(tmp_path / "images", summary_writer=writer,
                                            step_transform=lambda engine: 10 * engine.state.epoch)
        _evaluate([first, second], handler, epochs=2)

    # PNG files: the grid of the first batch, per epoch and the last one
    expected = make_grid(first["image"], first["pred"])
    for name in ("recon_grid_epoch0001.png", "recon_grid_epoch0002.png", "recon_grid_last.png"):
        assert np.array_equal(np.array(Image.open(tmp_path / "images" / name)), expected), name

    acc = _accumulator(tmp_path / "tb")
    volume_tag = "val/reconstruction_volume_HWD/image"  # MONAI's plot_2d_or_3d_image names it {tag}_HWD/image
    assert set(acc.Tags()["images"]) == {"val/reconstructions", volume_tag}
    grids = acc.Images("val/reconstructions")
    assert [e.step for e in grids] == [10, 20]
    assert np.array_equal(np.array(Image.open(io.BytesIO(grids[-1].encoded_image_string)).convert("RGB")), expected)

    gifs = acc.Images(volume_tag)
    assert [e.step for e in gifs] == [10, 20]
    gif = Image.open(io.BytesIO(gifs[-1].encoded_image_string))
    assert gif.format == "GIF" and gif.n_frames == Z  # one frame per axial slice
    assert gif.size == (2 * X, Y)  # (width, height): input | reconstruction, each X wide and Y high
    # the middle frame is the middle axial plane of volume_pair, min-max scaled to 0-255 by MONAI
    pair = volume_pair(first["image"][0], first["pred"][0])[0].numpy()  # (Y, 2X, Z)
    scaled = (pair - pair.min()) / (pair.max() - pair.min()) * 255
    gif.seek(Z // 2)
    frame = np.array(gif.convert("L")).astype(float)
    assert np.abs(frame - scaled[..., Z // 2]).max() <= 1.0


def test_grid_handler_writes_no_animation_for_2d_batches(tmp_path):
    batch = {"image": _volume(8)[..., 0], "pred": _volume(9)[..., 0]}
    with SummaryWriter(log_dir=str(tmp_path / "tb")) as writer:
        _evaluate([batch], ReconstructionGridHandler(tmp_path / "images", summary_writer=writer))
    assert _accumulator(tmp_path / "tb").Tags()["images"] == ["val/reconstructions"]
    assert np.array(Image.open(tmp_path / "images" / "recon_grid_last.png")).shape == (2 * X, 2 * Y, 3)
